"""``GET /v1/models`` and ``GET /v1/models/{id}``: the policy's routes and backends (those the
calling key may name), as OpenAI's model list and model object.

Each object also has the fields of Anthropic's (``type``, ``display_name``, ``created_at``) and
the list Anthropic's paging fields (``has_more``, ``first_id``, ``last_id``): the ``anthropic``
SDKs' ``models.list()`` reads the same path. Extra fields are ignored by OpenAI's clients.
Anthropic's paging parameters (``limit`` 1–1000, ``after_id``, ``before_id``) cut the list into
pages; without any of them the whole list comes back, as OpenAI's clients expect."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.governance.grants import Grant
from gateway.http.errors import error_response
from gateway.routing.runtime import Active, Runtime

router = APIRouter()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _public_model(kind: str, model: str) -> str:
    """A backend's model as clients see it: an in-process model given as a file path is named
    by its file, not by where it lies on the gateway's host."""
    if kind == "tiny" and model != "default":
        return PurePath(model).name or model
    return model


def _model(name: str, details: dict[str, Any]) -> dict[str, Any]:
    """A model object in OpenAI's shape and Anthropic's at once (gateway names have no date)."""
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "tiergate",
        "type": "model",
        "display_name": name,
        "created_at": "1970-01-01T00:00:00Z",
        "tiergate": details,
    }


def _entries(active: Active) -> list[dict[str, Any]]:
    """Each route, then each backend that is not also a route's name, as a model object."""
    policy = active.policy
    data: list[dict[str, Any]] = []
    for name, route in policy.routes.items():
        details = {
            "kind": "route",
            "default": name == policy.default_route,
            "tiers": list(route.tiers),
            "fixed_tier": route.fixed_tier,
            "fallback": route.fallback,
        }
        data.append(_model(name, details))
    for name, config in policy.backends.items():
        if name in policy.routes:
            continue
        state = active.pool.get(name)
        details = {
            "kind": "backend",
            "type": config.type,
            "model": _public_model(config.type, config.model),
            "tier": policy.tier_of(name),
            "available": state is not None and state.is_up(),
        }
        data.append(_model(name, details))
    return data


def _visible(request: Request) -> list[dict[str, Any]]:
    """The entries the calling key may name: a key limited to some routes (or backends) sees
    those only, not the rest of the gateway."""
    entries = _entries(_runtime(request).active)
    grant: Grant | None = request.scope.get("state", {}).get("grant")
    if grant is None or grant.routes is None:
        return entries
    return [entry for entry in entries if entry["id"] in grant.routes]


MAX_PAGE = 1000
DEFAULT_PAGE = 20  # Anthropic's, when a page is asked for by an id without a limit


class _PageError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _page(
    data: list[dict[str, Any]], query: Mapping[str, str]
) -> tuple[list[dict[str, Any]], bool]:
    """The page Anthropic's ``limit`` / ``after_id`` / ``before_id`` ask for, and whether more
    lie beyond it (in the direction of the paging); the whole list when none is given."""
    limit_text, after, before = query.get("limit"), query.get("after_id"), query.get("before_id")
    if limit_text is None and after is None and before is None:
        return data, False
    if after is not None and before is not None:
        raise _PageError("before_id", "give after_id or before_id, not both")
    limit = DEFAULT_PAGE
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise _PageError("limit", f"limit must be a whole number from 1 to {MAX_PAGE}")
        limit = int(limit_text)
    ids = [entry["id"] for entry in data]
    for param, cursor in (("after_id", after), ("before_id", before)):
        if cursor is not None and cursor not in ids:
            raise _PageError(param, f"{param} {cursor!r} is not in the list: use an id it gave")
    if before is not None:
        end = ids.index(before)
        return data[max(0, end - limit) : end], end - limit > 0
    start = ids.index(after) + 1 if after is not None else 0
    return data[start : start + limit], start + limit < len(data)


@router.get("/v1/models")
async def models(request: Request) -> Response:
    try:
        data, more = _page(_visible(request), request.query_params)
    except _PageError as exc:
        return error_response(
            400,
            str(exc),
            type_="invalid_request_error",
            param=exc.param,
            code="invalid_value",
            path=request.url.path,
        )
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return _json(
        {"object": "list", "data": data, "has_more": more, "first_id": first, "last_id": last}
    )


@router.get("/v1/models/{model_id:path}")
async def model(request: Request, model_id: str) -> Response:
    """The list's entry for ``model_id`` (what the SDKs' ``models.retrieve`` asks for)."""
    entries = _visible(request)
    for entry in entries:
        if entry["id"] == model_id:
            return _json(entry)
    names = ", ".join(entry["id"] for entry in entries)
    return error_response(
        404,
        f"the model {model_id!r} does not exist: name a route or a backend ({names})",
        type_="invalid_request_error",
        param="model",
        code="model_not_found",
        path=request.url.path,
    )

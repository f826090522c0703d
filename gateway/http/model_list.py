"""``GET /v1/models`` and ``GET /v1/models/{id}``: the policy's routes and backends (those the
calling key may name), as OpenAI's model list and model object.

Each object also has the fields of Anthropic's (``type``, ``display_name``, ``created_at``) and
the list Anthropic's paging fields (``has_more``, ``first_id``, ``last_id``): the ``anthropic``
SDKs' ``models.list()`` reads the same path. Extra fields are ignored by OpenAI's clients."""

from __future__ import annotations

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


@router.get("/v1/models")
async def models(request: Request) -> Response:
    data = _visible(request)
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return _json(
        {"object": "list", "data": data, "has_more": False, "first_id": first, "last_id": last}
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

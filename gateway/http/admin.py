"""Admin endpoints (admin key): the policy (show, reload, explain) and the savings report."""

from __future__ import annotations

import asyncio
import os
from functools import partial
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from adapters.base import ChatRequest
from gateway.errors import BadRequest, NotFound
from gateway.http.ledger_calls import ledger_call, ledger_deadline
from gateway.http.openai_in import ChatCompletionIn
from gateway.http.openai_requests import chat_request
from gateway.http.validation import validation_error
from gateway.ledger.report import GROUPINGS, build_report, known_teams, parse_since
from gateway.ledger.writer import LedgerWriter
from gateway.policy import UnknownRoute
from gateway.routing.explain import explain
from gateway.routing.runtime import ReloadResult, Runtime

router = APIRouter()


class Peers(Protocol):
    """The other workers of ``tiergate serve --workers N``, through the supervising parent
    (``gateway.workers``): what makes the admin reload reach every worker, as SIGHUP to the
    parent does."""

    def attach(self, runtime: Runtime) -> None:
        """Start reloading ``runtime`` when another worker asks (through the parent)."""

    def detach(self) -> None: ...

    async def reload(self) -> list[dict[str, Any]] | None:
        """Have every other worker reload its policy; each one's ``ReloadResult.as_dict()``
        with its ``pid`` (``answered`` False for one that did not answer in time), or None
        when the parent did not answer."""


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/admin/policy")
async def admin_policy(request: Request) -> Response:
    runtime = _runtime(request)
    policy = runtime.active.policy
    source = await asyncio.to_thread(runtime.policy_path.read_text)
    return _json({"hash": policy.hash, "path": policy.source, "source": source})


@router.post("/admin/policy/reload")
async def admin_reload(request: Request) -> Response:
    """Reload this process's policy (422 with the problems when the file is invalid: nothing
    changes anywhere). With ``--workers N``, then every other worker's, and the answer says
    how many now serve the new hash (``workers``)."""
    result = await _runtime(request).reload("admin")
    if result.problems and not result.applied:
        return _json(result.as_dict(), 422)
    body = result.as_dict()
    peers: Peers | None = getattr(request.app.state, "peers", None)
    if peers is not None:
        body["workers"] = _workers(result, await peers.reload())
    return _json(body)


def _workers(mine: ReloadResult, others: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Every worker's reload: how many were asked (this one included), how many answered, how
    many serve the hash this one serves now, and each one's result."""
    each = [{"pid": os.getpid(), "answered": True, **mine.as_dict()}]
    each += others or []
    report: dict[str, Any] = {
        "count": len(each) if others is not None else None,
        "answered": sum(1 for w in each if w.get("answered")),
        "serving": sum(1 for w in each if w.get("hash") == mine.hash),
        "each": each,
    }
    if others is None:
        report["detail"] = (
            "the supervising process did not pass the reload on: other workers may still serve "
            "the previous policy (send SIGHUP to the parent to reload them all)"
        )
    return report


@router.get("/admin/report")
async def admin_report(
    request: Request,
    since: str = "7d",
    until: str | None = None,
    by: str | None = None,
    team: str | None = None,
) -> Response:
    """The same figures as ``tiergate report --format json`` (``team``: that team's only)."""
    ledger: LedgerWriter | None = request.app.state.ledger
    if ledger is None:
        raise BadRequest("the ledger is off (TIERGATE_LEDGER=false): there is nothing to report")
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise BadRequest(f"since: {exc}", param="since") from None
    try:
        end = parse_since(until) if until else None
    except ValueError as exc:
        raise BadRequest(f"until: {exc}", param="until") from None
    if end is not None and end <= start:
        raise BadRequest(
            f"until: {until!r} is not after since {since!r}: the window [since, until) would be "
            "empty; give the earlier time as since",
            param="until",
        )
    if by is not None and by not in GROUPINGS:
        raise BadRequest(f"by: use one of {', '.join(GROUPINGS)}", param="by")
    async with ledger_deadline():
        await ledger.flush()  # include what this process has just answered
        if team:
            teams = await ledger_call(partial(known_teams, ledger.engine))
            if team not in teams:  # a misspelt name would read as a team that spent nothing
                known = f"known: {', '.join(teams)}" if teams else "no team has a key or a request"
                raise NotFound(
                    f"team: no team {team!r} in the ledger ({known}); GET /admin/teams lists them",
                    param="team",
                    code="team_not_found",
                )
        result = await ledger_call(
            partial(build_report, ledger.engine, since=start, until=end, by=by, team=team or None)
        )
    return _json(result)


@router.post("/admin/policy/explain")
async def admin_explain(request: Request) -> Response:
    """Body: ``{"prompt": "…"}`` or a chat request body (``messages``, ``tools``,
    ``response_format``, ...), optional ``model``, ``max_tokens``, ``stream``."""
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    chat = _explain_request(payload)
    active = _runtime(request).active
    try:
        result = explain(
            active.policy,
            chat.messages,
            model=payload.get("model"),
            pool=active.pool,
            request=chat,
            stream=payload.get("stream") is True,
        )
    except UnknownRoute as exc:
        raise BadRequest(str(exc), param="model", code="model_not_found") from None
    return _json(result)


def _explain_request(payload: dict[str, Any]) -> ChatRequest:
    """The request to explain: ``prompt`` (one user turn) or a chat body (tools, images, ...)."""
    fields = {k: v for k, v in payload.items() if k != "prompt"}
    if isinstance(payload.get("prompt"), str):
        fields["messages"] = [{"role": "user", "content": payload["prompt"]}]
    try:
        body = ChatCompletionIn.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc, ChatCompletionIn) from None
    return chat_request(body, max_tokens_limit=1 << 30)

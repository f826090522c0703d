"""HTTP routes. Thin: parse at the edge, hand over to ``serving`` / ``runtime``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.base import ChatRequest
from gateway.embeddings import serve_embeddings
from gateway.errors import BadRequest
from gateway.explain import explain
from gateway.ledger.report import GROUPINGS, build_report, parse_since
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.openai_schema import (
    chat_request,
    completion_request,
    parse_chat,
    parse_completion,
    parse_embedding,
    validation_error,
)
from gateway.policy import UnknownRoute
from gateway.runtime import Runtime
from gateway.serving import serve

router = APIRouter()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def chat_completions(request: Request) -> Response:
    body = parse_chat(await request.body())
    limits = _runtime(request).active.policy.limits
    if len(body.messages) > limits.max_messages:
        raise BadRequest(
            f"messages: {len(body.messages)} messages is above this gateway's limit of "
            f"{limits.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    chat = chat_request(body, limits.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await serve(
        request,
        chat,
        model=body.model,
        stream=bool(body.stream),
        include_usage=include_usage,
        kind="chat",
    )


async def completions(request: Request) -> Response:
    body = parse_completion(await request.body())
    chat = completion_request(body, _runtime(request).active.policy.limits.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        return await serve(
            request,
            chat,
            model=body.model,
            stream=bool(body.stream),
            include_usage=include_usage,
            kind="completion",
        )
    except BadRequest as exc:
        # The router speaks of `messages`; this endpoint's client sent a `prompt`.
        if exc.param == "messages":
            exc.param = "prompt"
        raise


async def embeddings(request: Request) -> Response:
    body = parse_embedding(await request.body())
    return await serve_embeddings(request, body)


# The hot routes are plain Starlette routes (added by ``create_app``): they parse their own
# body, so FastAPI's dependency machinery would only add time to every request (~15% of the
# gateway's CPU in the overhead benchmark).
HOT_ROUTES = (
    ("/v1/chat/completions", chat_completions),
    ("/v1/completions", completions),
    ("/v1/embeddings", embeddings),
)


@router.get("/v1/models")
async def models(request: Request) -> Response:
    active = _runtime(request).active
    policy = active.policy
    data: list[dict[str, Any]] = []
    for name, route in policy.routes.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "tiergate",
                "tiergate": {
                    "kind": "route",
                    "default": name == policy.default_route,
                    "tiers": list(route.tiers),
                    "fixed_tier": route.fixed_tier,
                    "fallback": route.fallback,
                },
            }
        )
    for name, config in policy.backends.items():
        if name in policy.routes:
            continue
        state = active.pool.get(name)
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "tiergate",
                "tiergate": {
                    "kind": "backend",
                    "type": config.type,
                    "model": config.model,
                    "tier": policy.tier_of(name),
                    "available": state is not None and state.unavailable_reason() is None,
                },
            }
        )
    return _json({"object": "list", "data": data})


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Each backend's state. 200 while the default route has a usable backend, else 503."""
    runtime = _runtime(request)
    active = runtime.active
    policy = active.policy
    backends = {}
    for state in active.pool.states():
        reason = state.unavailable_reason()
        backends[state.name] = {
            "tier": policy.tier_of(state.name),
            "usable": reason is None and state.breaker.state() != "open",
            "healthy": state.healthy,
            "warm": state.warm,
            "breaker": state.breaker.state(),
            "detail": reason or state.health_detail,
        }
    default = policy.routes[policy.default_route]
    route_backends = {b for t in default.tiers for b in policy.tier(t).backends}
    usable = [n for n in route_backends if backends.get(n, {}).get("usable")]
    all_usable = all(backends[n]["usable"] for n in route_backends if n in backends)
    status = "ready" if all_usable else ("degraded" if usable else "unavailable")
    store = request.app.state.cache.store
    cache_state, cache_detail = store.state()
    if cache_state != "ok" and status == "ready":
        status = "degraded"  # still serving, uncached
    runtime.refresh_gauges()
    return _json(
        {
            "status": status,
            "policy": policy.hash,
            "backends": backends,
            "cache": {"store": store.kind, "state": cache_state, "detail": cache_detail},
        },
        200 if usable else 503,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    _runtime(request).refresh_gauges()
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- admin ------------------------------------------------------------------------------------


@router.get("/admin/policy")
async def admin_policy(request: Request) -> Response:
    runtime = _runtime(request)
    policy = runtime.active.policy
    source = await asyncio.to_thread(runtime.policy_path.read_text)
    return _json({"hash": policy.hash, "path": policy.source, "source": source})


@router.post("/admin/policy/reload")
async def admin_reload(request: Request) -> Response:
    result = await _runtime(request).reload("admin")
    return _json(result.as_dict(), 200 if result.applied or not result.problems else 422)


@router.get("/admin/report")
async def admin_report(
    request: Request, since: str = "7d", until: str | None = None, by: str | None = None
) -> Response:
    """The same figures as ``tiergate report --format json``."""
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
    if by is not None and by not in GROUPINGS:
        raise BadRequest(f"by: use one of {', '.join(GROUPINGS)}", param="by")
    await ledger.flush()  # include what this process has just answered
    result = await asyncio.to_thread(build_report, ledger.engine, since=start, until=end, by=by)
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
    from pydantic import ValidationError

    from gateway.openai_schema import ChatCompletionIn

    try:
        body = ChatCompletionIn.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return chat_request(body, max_tokens_limit=1 << 30)

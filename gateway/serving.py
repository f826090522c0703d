"""The request path shared by ``/v1/chat/completions`` and ``/v1/completions``:
plan → dispatch → OpenAI-shaped answer (whole or SSE), with headers, metrics and a log line."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from adapters.base import ChatRequest, Chunk, Completion, FinishReason, Timings, Usage
from adapters.errors import BackendError, BackendRateLimited
from gateway.accounting import Accountant, Outcome
from gateway.cache.request import prepare as prepare_cache
from gateway.cache.service import CachedAnswer, CacheService
from gateway.canary.controller import CanaryController
from gateway.canary.shadow import shadow_job
from gateway.choices import (
    extra_requests,
    extra_stream,
    merged,
    more_choices,
    sum_usage,
    total_usage,
)
from gateway.dispatch import DispatchError, Trace
from gateway.errors import (
    BadGateway,
    BadRequest,
    GatewayError,
    GatewayTimeout,
    ServiceUnavailable,
    TooManyRequests,
)
from gateway.ids import request_id
from gateway.policy import Candidate, UnknownRoute
from gateway.pricing import PriceBook, Priced
from gateway.responses import DONE, Kind, Shape, error_event
from gateway.router import Plan, make_plan
from gateway.runtime import Runtime


async def serve(
    request: Request,
    chat: ChatRequest,
    *,
    model: str | None,
    stream: bool,
    include_usage: bool,
    kind: Kind,
) -> Response:
    runtime: Runtime = request.app.state.runtime
    accountant: Accountant = request.app.state.accountant
    active = runtime.active
    rid = request_id()
    started = time.perf_counter()
    headers = {"x-request-id": rid, "x-tiergate-policy": active.policy.hash}
    outcome = Outcome(
        rid=rid,
        ts=datetime.now(UTC),
        started=started,
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        policy_hash=active.policy.hash,
        stream=stream,
        choices=chat.n,
    )
    prices = active.policy.prices
    try:
        plan = make_plan(active.policy, active.pool.capabilities, chat, model, stream=stream)
    except UnknownRoute as exc:
        raise BadRequest(str(exc), param="model", code="model_not_found", headers=headers) from None
    except GatewayError as exc:
        exc.headers.update(headers)
        raise
    accountant.metrics.scorer.observe(plan.scorer_s)
    canary: CanaryController = request.app.state.canary
    routed = canary.route(
        active.policy,
        plan.decision,
        key_id=outcome.key_id,
        user=chat.user,
        headers=request.headers,
        rid=rid,
        fits=plan.fits,
    )
    outcome.canary_arm = routed.arm
    outcome.route = plan.decision.route
    outcome.tier = plan.decision.tier
    outcome.prompt_estimate = plan.prompt_tokens
    headers["x-tiergate-route"] = plan.decision.route
    headers["x-tiergate-complexity"] = f"{plan.score.value:.3f}" if plan.score else "pinned"
    service: CacheService = request.app.state.cache
    cache, decision = await prepare_cache(
        service,
        active.policy,
        routed.decision,
        chat,
        key_id=outcome.key_id,
        in_flight=lambda name: active.pool[name].in_flight,
        usable=lambda name: active.pool[name].unavailable_reason() is None,
    )
    if cache.hit is not None:
        return _from_cache(
            cache.hit, kind, stream, include_usage, outcome, headers, accountant, plan, prices
        )
    if routed.arm == "candidate":
        cache.key = None  # a candidate's answers are on trial: never replayed to other callers
    outcome.cache = cache.label()
    if not stream:
        try:
            served = await active.dispatcher.complete(decision, chat)
        except DispatchError as exc:
            raise _dispatch_failed(outcome, exc, headers, accountant, plan, prices) from None
        outcome.trace = served.trace
        _served_by(outcome, headers, served.candidate)
        completion = served.completion
        more: tuple[Completion, ...] = ()
        if chat.n > 1:
            try:
                more = await more_choices(
                    active.pool[served.candidate.backend],
                    chat,
                    chat.n - 1,
                    active.policy.timeouts.per_try_s,
                )
            except BackendError as exc:
                outcome.status, outcome.error = 502, type(exc).__name__
                accountant.finish(outcome, plan, prices)
                raise BadGateway(
                    f"the first choice came, the other n-1 did not: {exc.message}",
                    code="choices_failed",
                    headers=headers,
                ) from None
            completion = dataclasses.replace(completion, usage=total_usage(completion, more))
        outcome.model = completion.model
        outcome.usage, outcome.timings = completion.usage, completion.timings
        outcome.cache = cache.label(completion.usage.cached_tokens)
        headers["x-tiergate-cache"] = outcome.cache
        priced = outcome.price(prices, plan)
        _cost_headers(headers, priced)
        cache.keep(completion, outcome.tier, outcome.backend, priced.cost)
        shape = Shape(kind, _response_id(kind, rid), int(time.time()), completion.model)
        body = shape.whole(completion, more)
        accountant.finish(outcome, plan, prices)
        if routed.shadow:  # after the answer is made: the client never waits for the candidate
            canary.mirror(active.policy, shadow_job(outcome, chat, completion))
        return Response(body, media_type="application/json", headers=headers)

    try:
        opened = await active.dispatcher.open_stream(decision, chat)
    except DispatchError as exc:
        raise _dispatch_failed(outcome, exc, headers, accountant, plan, prices) from None
    outcome.trace = opened.trace
    _served_by(outcome, headers, opened.candidate)
    outcome.model = str(getattr(opened.state.backend, "model_id", opened.candidate.backend))
    shape = Shape(kind, _response_id(kind, rid), int(time.time()), outcome.model)
    headers["cache-control"] = "no-cache"
    headers["x-tiergate-cache"] = outcome.cache

    def account(text: str, finish: FinishReason) -> None:
        priced = outcome.price(prices, plan)
        if outcome.usage is not None and outcome.timings is not None:
            answer = Completion(
                text, finish, outcome.usage, outcome.timings, outcome.backend, outcome.model
            )
            cache.keep(answer, outcome.tier, outcome.backend, priced.cost)
            if routed.shadow:
                canary.mirror(active.policy, shadow_job(outcome, chat, answer))
        accountant.finish(outcome, plan, prices)

    streams = [active.dispatcher.chunks(opened)]
    timeouts = active.policy.timeouts
    streams += [
        extra_stream(opened.state, r, timeouts.per_try_s, timeouts.stream_idle_s)
        for r in extra_requests(chat, chat.n - 1)
    ]
    events = _events(merged(streams), chat.n, shape, include_usage, outcome, account)

    async def on_close() -> None:
        await opened.release()
        accountant.finish(outcome, plan, prices)

    return EventStreamResponse(events, headers=headers, on_close=on_close)


def _from_cache(
    hit: CachedAnswer,
    kind: Kind,
    stream: bool,
    include_usage: bool,
    outcome: Outcome,
    headers: dict[str, str],
    accountant: Accountant,
    plan: Plan,
    prices: PriceBook,
) -> Response:
    """Answer from the response cache: no backend, cost 0, the saving recorded."""
    latency = (time.perf_counter() - outcome.started) * 1000.0
    completion = hit.completion(latency)
    outcome.cache, outcome.cache_saved = "hit", hit.cost_usd
    outcome.tier, outcome.backend, outcome.model = hit.tier, "cache", hit.model
    outcome.usage, outcome.timings = completion.usage, completion.timings
    headers.update(
        {"x-tiergate-cache": "hit", "x-tiergate-tier": hit.tier, "x-tiergate-backend": "cache"}
    )
    _cost_headers(headers, outcome.price(prices, plan))
    shape = Shape(kind, _response_id(kind, outcome.rid), int(time.time()), hit.model)
    accountant.finish(outcome, plan, prices)
    if not stream:
        return Response(shape.whole(completion), media_type="application/json", headers=headers)
    headers["cache-control"] = "no-cache"
    parts = [shape.first(include_usage), shape.delta(hit.text, include_usage)]
    parts.append(shape.finish(hit.finish_reason, include_usage))
    if include_usage:
        parts.append(shape.usage(hit.usage))
    parts.append(DONE)
    return Response(
        b"".join(p for p in parts if p), media_type="text/event-stream", headers=headers
    )


def _dispatch_failed(
    outcome: Outcome,
    exc: DispatchError,
    headers: dict[str, str],
    accountant: Accountant,
    plan: Plan,
    prices: PriceBook,
) -> GatewayError:
    """Book a request no backend answered (against the last one tried) and return the error
    the client gets."""
    outcome.trace = Trace(exc.attempts, exc.skipped)
    if exc.attempts:
        last = exc.attempts[-1]
        outcome.backend, outcome.tier = last.backend, last.tier
    error = _http_error(exc, headers)
    outcome.status, outcome.error = error.status, error.code
    accountant.finish(outcome, plan, prices)
    return error


def _cost_headers(headers: dict[str, str], priced: Priced) -> None:
    if priced.cost is not None:
        headers["x-tiergate-cost-usd"] = f"{priced.cost:.12f}"
    if priced.baseline is not None:
        headers["x-tiergate-baseline-cost-usd"] = f"{priced.baseline:.12f}"


class EventStreamResponse(StreamingResponse):
    """An SSE response whose clean-up runs however the response ends: finished, client gone
    before the first byte, or cancelled mid-stream."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(receive, send)
        finally:
            await self._events.aclose()
            await self._on_close()

    async def _stream(self, receive: Receive, send: Send) -> None:
        """Send the events until they end or the client goes away. A plain task listens for
        the disconnect and cancels this one, in place of Starlette's task group per stream
        (about 3.5% less CPU per streamed request; bench/README.md)."""
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = done = False

        async def listen() -> None:
            nonlocal gone
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # a server whose receive fails: treat it as the client gone
                pass
            if not done:
                gone = True
                streaming.cancel()

        listener = asyncio.create_task(listen())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone or streaming.uncancel() > 0:
                raise  # cancelled from outside (the server is stopping), not by the listener
        finally:
            done = True
            listener.cancel()


async def _events(
    chunks: AsyncGenerator[tuple[int, Chunk], None],
    choices: int,
    shape: Shape,
    include_usage: bool,
    outcome: Outcome,
    account: Callable[[str, FinishReason], None],
) -> AsyncGenerator[bytes, None]:
    """The SSE events of ``choices`` streamed choices (``chunks`` tags each with its index)."""
    started = outcome.started
    finish: list[FinishReason] = ["stop"] * choices
    usages: list[Usage | None] = [None] * choices
    counts = [0] * choices
    first_text_at: float | None = None
    texts: list[str] = []  # choice 0's: what the cache and the shadow compare keep
    outcome.status = 499  # until the stream completes: the client went away
    for index in range(choices):
        opening = shape.first(include_usage, index)
        if opening:
            yield opening
    try:
        async for index, chunk in chunks:
            if chunk.tool_calls:
                if first_text_at is None:
                    first_text_at = time.perf_counter()
                counts[index] += 1
                outcome.chunks += 1
                yield shape.tool_calls(chunk.tool_calls, include_usage, index)
            if chunk.delta:
                if first_text_at is None:
                    first_text_at = time.perf_counter()
                counts[index] += 1
                outcome.chunks += 1
                if index == 0:
                    texts.append(chunk.delta)
                yield shape.delta(chunk.delta, include_usage, chunk.logprobs, index)
            if chunk.finish_reason is not None:
                finish[index] = chunk.finish_reason
            if chunk.usage is not None:
                usages[index] = chunk.usage
            if chunk.timings is not None and index == 0:
                outcome.timings = chunk.timings
    except BackendError as exc:
        outcome.status, outcome.error = 502, type(exc).__name__
        yield error_event(
            f"the backend failed after the stream started ({exc.message}); the answer above is "
            f"incomplete and was not retried, since the client already had part of it",
            "upstream_error",
            "stream_interrupted",
        )
        return
    # A choice whose backend reported no usage: count what we sent, and the prompt as the
    # scorer saw it.
    known = [
        u
        if u is not None
        else Usage(prompt_tokens=outcome.prompt_estimate, completion_tokens=n, estimated=True)
        for u, n in zip(usages, counts, strict=True)
    ]
    usage = known[0] if choices == 1 else sum_usage(known)
    outcome.usage = usage
    ttft = (first_text_at - started) * 1000.0 if first_text_at is not None else None
    wall = (time.perf_counter() - started) * 1000.0
    base = outcome.timings or Timings(latency_ms=wall)
    outcome.timings = Timings(
        latency_ms=wall, ttft_ms=ttft, server_ms=base.server_ms, load_ms=base.load_ms
    )
    for index in range(choices):
        yield shape.finish(finish[index], include_usage, index)
    if include_usage:
        yield shape.usage(usage)
    outcome.status = 200
    # Recorded before the last byte, so a report asked for right after sees this request.
    account("".join(texts), finish[0])
    yield DONE


def _served_by(outcome: Outcome, headers: dict[str, str], candidate: Candidate) -> None:
    outcome.tier, outcome.backend = candidate.tier, candidate.backend
    headers["x-tiergate-tier"] = candidate.tier
    headers["x-tiergate-backend"] = candidate.backend
    fallbacks = len(outcome.trace.attempts) - 1
    if fallbacks:
        headers["x-tiergate-fallbacks"] = str(fallbacks)


def _response_id(kind: Kind, rid: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + rid


def _http_error(exc: DispatchError, headers: dict[str, str]) -> GatewayError:
    """The client-facing error for a request no backend answered."""
    detail = exc.describe()
    if not exc.attempts:
        return ServiceUnavailable(
            f"no backend could take this request: {detail}",
            code="no_backend_available",
            headers=headers,
        )
    if exc.all_rejected:
        return BadRequest(
            f"the backends refused this request: {detail}",
            code="rejected_by_backend",
            headers=headers,
        )
    failed = [a for a in exc.attempts if a.error != "BackendRejected"]
    kind = failed[-1].error if failed else None
    message = f"every backend failed: {detail}"
    if kind == "BackendTimeout":
        return GatewayTimeout(message, code="backend_timeout", headers=headers)
    if kind == "BackendRateLimited":
        retry = exc.last.retry_after if isinstance(exc.last, BackendRateLimited) else None
        extra = {"retry-after": str(max(1, round(retry)))} if retry else {}
        return TooManyRequests(message, code="backend_rate_limited", headers={**headers, **extra})
    if kind == "BackendBadResponse":
        return BadGateway(message, code="bad_backend_response", headers=headers)
    return ServiceUnavailable(message, code="backend_unavailable", headers=headers)

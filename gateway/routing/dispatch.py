"""Send a request to its candidates in order, inside one deadline.

* Each attempt gets ``per_try_s`` (plus ``cold_start_s`` while the backend has not finished
  loading its model), never more than what is left of ``total_s``.
* A backend that is disabled, unhealthy or whose breaker is open is skipped, and the reason is
  kept for the error message and ``policy explain``.
* A 429 or a 5xx is first retried on the same backend, after a jittered back-off or the
  upstream's ``Retry-After``, within the deadline and the backend's retry budget
  (``gateway.routing.retry``); each retry is an attempt of its own in the trace.
* A stream is retried (on the same backend or the next candidate) only until its first chunk
  has arrived: after that the client has bytes and a retry would duplicate them.
* Breakers count failures that say something about the backend (unreachable, timeout, garbage);
  a rejection (the request's fault) or rate limit (busy, alive) does not count, and neither does
  a timeout while the model was still loading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry.trace import Span

from adapters.base import (
    Backend,
    ChatRequest,
    Chunk,
    Completion,
    Embedder,
    EmbeddingRequest,
    Embeddings,
)
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRejected,
    BackendTimeout,
)
from gateway import tracing
from gateway.policy import Candidate, Decision
from gateway.policy.schema import RetrySpec, TimeoutSpec
from gateway.routing import spans
from gateway.routing.attempts import Attempt, DispatchError, Embedded, Served, Skip, Trace
from gateway.routing.opened import Opened, close_quietly, counts_against, relay
from gateway.routing.pool import BackendPool, BackendState
from gateway.routing.retry import Retrier, retry_reason

_T = TypeVar("_T")
_R = TypeVar("_R", ChatRequest, EmbeddingRequest)


@dataclass(frozen=True, slots=True)
class _Try(Generic[_R]):
    """One try of one candidate: what was sent (the request, with ``traceparent`` when
    traced), its span, when it started on the dispatcher's clock, and its time allowed."""

    candidate: Candidate
    state: BackendState
    sent: _R
    span: Span | None
    started: float
    budget: float


class Dispatcher:
    def __init__(
        self,
        pool: BackendPool,
        timeouts: TimeoutSpec,
        clock: Callable[[], float] = time.monotonic,
        retrier: Retrier | None = None,
    ) -> None:
        self._pool = pool
        self._timeouts = timeouts
        self._clock = clock
        # Without one (tests of fallback alone), the policy defaults' retries on the same clock.
        self._retrier = retrier if retrier is not None else Retrier(RetrySpec(), clock)

    async def complete(
        self,
        decision: Decision,
        request: ChatRequest,
        *,
        arrived: float | None = None,
        trace: Trace | None = None,
    ) -> Served:
        """The first candidate's answer, inside the deadline (``timeouts.total_s`` from
        ``arrived``, the request's ``time.perf_counter()`` when it came in; default now).
        ``trace`` (default a new one) is filled as the tries go, so a caller whose call is
        cancelled (the client went away) still knows which backends were tried."""

        completion, candidate, trace = await self._first(
            decision, request, _complete, arrived, trace
        )
        return Served(completion, candidate, trace)

    async def embed(
        self,
        decision: Decision,
        request: EmbeddingRequest,
        *,
        arrived: float | None = None,
        trace: Trace | None = None,
    ) -> Embedded:
        """Embeddings from the first candidate that answers (same deadlines and fallbacks)."""

        embeddings, candidate, trace = await self._first(decision, request, _embed, arrived, trace)
        return Embedded(embeddings, candidate, trace)

    async def _first(
        self,
        decision: Decision,
        request: _R,
        call: Callable[[Backend, _R], Awaitable[_T]],
        arrived: float | None,
        trace: Trace | None,
    ) -> tuple[_T, Candidate, Trace]:
        async def once(attempt: _Try[_R]) -> _T:
            state = attempt.state
            state.in_flight += 1
            try:
                async with asyncio.timeout(attempt.budget):
                    result = await call(state.backend, attempt.sent)
            except TimeoutError:
                raise _timeout_error(attempt.candidate.backend, attempt.budget) from None
            except BackendError:
                raise
            except BaseException:
                state.breaker.release()
                spans.closed(attempt.span)
                raise
            finally:
                state.in_flight -= 1
            state.breaker.record_success()
            spans.succeeded(attempt.span, result)
            return result

        result, attempt, trace = await self._tried(decision, request, arrived, once, trace)
        return result, attempt.candidate, trace

    async def open_stream(
        self,
        decision: Decision,
        request: ChatRequest,
        *,
        arrived: float | None = None,
        trace: Trace | None = None,
    ) -> Opened:
        """A stream whose first chunk has arrived; a try (or a retry) that fails before then
        passes on like a whole answer's, one after it is the client's error (``chunks``).
        ``trace`` as for ``complete``."""
        (first, stream), attempt, trace = await self._tried(
            decision, request, arrived, _open_once, trace
        )
        spans.first_chunk(attempt.span, trace.attempts[-1].latency_ms)
        return Opened(
            first,
            stream,
            attempt.candidate,
            attempt.state,
            trace,
            attempt.started,
            span=attempt.span,
        )

    async def _tried(
        self,
        decision: Decision,
        request: _R,
        arrived: float | None,
        once: Callable[[_Try[_R]], Awaitable[_T]],
        trace: Trace | None,
    ) -> tuple[_T, _Try[_R], Trace]:
        """The first try that succeeds: the candidates in order, each retried as the policy
        allows, all inside the request's deadline. ``once`` makes one try: it returns what the
        backend gave, or raises the ``BackendError`` the try failed with (anything else
        propagates); it reserves and releases the backend itself. The loop here keeps the
        trace (``trace``, or a new one), the breakers' verdicts on failures, the attempt spans'
        ends and the back-off. A try cancelled (the client went away) is in the trace too, with
        no error: the backend did not fail."""
        trace = Trace() if trace is None else trace
        deadline = self._deadline(arrived)
        last: BackendError | None = None
        traced = tracing.current()
        for candidate, state in self._usable(decision, trace):
            retry: str | None = None  # why this try is a retry; None for the first
            retried = 0
            while True:
                budget = self._budget(state, deadline)
                if budget <= 0:
                    last = _deadline_error(candidate.backend, self._timeouts.total_s)
                    raise DispatchError(trace.attempts, trace.skipped, last)
                if retry is None:
                    self._retrier.first_try(candidate.backend)
                started = self._clock()
                span, sent = spans.start(traced, candidate, state, request, retry=retried)
                attempt = _Try(candidate, state, sent, span, started, budget)
                trace.trying(candidate)
                try:
                    result = await once(attempt)
                except BackendError as exc:
                    last = exc
                except asyncio.CancelledError:
                    latency = _ms(started, self._clock)
                    trace.attempts.append(
                        Attempt(candidate.backend, candidate.tier, None, None, latency, retry=retry)
                    )
                    raise
                else:
                    latency = _ms(started, self._clock)
                    trace.attempts.append(
                        Attempt(candidate.backend, candidate.tier, None, None, latency, retry=retry)
                    )
                    return result, attempt, trace
                self._failed(state, candidate, last, started, trace, retry)
                spans.ended(span, last)
                retry = await self._retry(state, last, retried, deadline)
                if retry is None:
                    break
                retried += 1
        raise DispatchError(trace.attempts, trace.skipped, last)

    def chunks(self, opened: Opened) -> AsyncGenerator[Chunk, None]:
        """An opened stream's chunks, its first included, each of the rest within
        ``stream_idle_s`` (``opened.relay``)."""
        return relay(opened, self._timeouts.stream_idle_s)

    # --- helpers ----------------------------------------------------------------------------

    def _usable(self, decision: Decision, trace: Trace) -> Iterator[tuple[Candidate, BackendState]]:
        """The candidates that may be tried, in order. Lazy: a breaker is asked only when its
        turn comes, so a half-open probe slot goes to a request that really tries it."""
        for candidate in decision.candidates:
            state = self._pool.get(candidate.backend)
            if state is None:
                trace.skipped.append(Skip(candidate.backend, "not in the active policy"))
                continue
            reason = state.unavailable_reason()
            if reason is not None:
                trace.skipped.append(Skip(candidate.backend, reason))
                continue
            if not state.breaker.allow():
                if state.healthy is False:
                    why = (
                        f"unhealthy: {state.health_detail} (one trial request at a time until "
                        f"it answers or a health check passes)"
                    )
                    trace.skipped.append(Skip(candidate.backend, why))
                    continue
                retry_in = state.breaker.retry_in()
                why = (
                    f"circuit open after {state.breaker.consecutive_failures} failures; "
                    f"next probe in {retry_in:.0f} s"
                )
                trace.skipped.append(Skip(candidate.backend, why, retry_in_s=retry_in))
                continue
            yield candidate, state

    async def _retry(
        self, state: BackendState, error: BackendError, retried: int, deadline: float
    ) -> str | None:
        """Why to try ``state``'s backend again after ``error``, once its back-off has been
        waited; None to move on. Only a backend whose breaker is closed is retried: one on
        probation (half-open) gets its single probe, and one that opens meanwhile is left."""
        reason = retry_reason(error)
        if reason is None or state.breaker.state() != "closed":
            return None
        wait = self._retrier.wait_s(state.name, error, retried, deadline - self._clock())
        if wait is None:
            return None
        await self._retrier.sleep(wait)
        if state.unavailable_reason() is not None or not state.breaker.allow():
            return None
        return reason

    def _deadline(self, arrived: float | None) -> float:
        """The request's deadline on this dispatcher's clock: ``timeouts.total_s`` from its
        arrival, so time spent before dispatch (a cold start, a slow plan) counts too."""
        spent = time.perf_counter() - arrived if arrived is not None else 0.0
        return self._clock() + self._timeouts.total_s - max(0.0, spent)

    def _budget(self, state: BackendState, deadline: float) -> float:
        per_try = self._timeouts.per_try_s
        if not state.warm:
            per_try += self._timeouts.cold_start_s
        return min(per_try, deadline - self._clock())

    def _failed(
        self,
        state: BackendState,
        candidate: Candidate,
        error: BackendError | None,
        started: float,
        trace: Trace,
        retry: str | None,
    ) -> None:
        assert error is not None
        if counts_against(error, state):
            state.breaker.record_failure()
        elif isinstance(error, BackendRejected):
            state.breaker.record_success()  # it answered; the request was the problem
        else:
            state.breaker.release()
        trace.attempts.append(
            Attempt(
                candidate.backend,
                candidate.tier,
                type(error).__name__,
                error.message,
                _ms(started, self._clock),
                error.status_code,
                retry,
            )
        )


async def _complete(backend: Backend, request: ChatRequest) -> Completion:
    return await backend.acomplete(request)


async def _embed(backend: Backend, request: EmbeddingRequest) -> Embeddings:
    if not isinstance(backend, Embedder):
        raise BackendRejected(backend.name, "this backend type cannot embed", 400)
    return await backend.aembed(request)


async def _open_once(attempt: _Try[ChatRequest]) -> tuple[Chunk, AsyncGenerator[Chunk, None]]:
    """One try at a stream: its first chunk and the rest, the backend left reserved."""
    state = attempt.state
    stream = state.backend.astream(attempt.sent)
    state.in_flight += 1
    try:
        async with asyncio.timeout(attempt.budget):
            first = await anext(stream)
    except (TimeoutError, BackendError, StopAsyncIteration) as exc:
        state.in_flight -= 1
        await close_quietly(stream)
        raise _as_backend_error(exc, attempt.candidate.backend, attempt.budget) from None
    except BaseException:
        state.in_flight -= 1
        state.breaker.release()
        await close_quietly(stream)
        spans.closed(attempt.span)
        raise
    return first, stream


def _ms(started: float, clock: Callable[[], float]) -> float:
    return (clock() - started) * 1000.0


def _timeout_error(backend: str, budget: float) -> BackendTimeout:
    return BackendTimeout(
        backend,
        f"no answer within {budget:.1f} s; raise timeouts.per_try_s in the policy if this "
        f"backend is just slow",
    )


def _deadline_error(backend: str, total: float) -> BackendTimeout:
    return BackendTimeout(
        backend, f"the request's deadline (timeouts.total_s = {total} s) ran out before this try"
    )


def _as_backend_error(exc: BaseException, backend: str, budget: float) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, TimeoutError):
        return _timeout_error(backend, budget)
    return BackendBadResponse(backend, "the stream ended before any chunk arrived")

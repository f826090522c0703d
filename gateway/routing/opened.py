"""A stream whose first chunk has arrived (``Dispatcher.open_stream``): the backend it holds,
and its chunks relayed to the client (``relay``) each within the idle timeout, the backend
released with the right verdict however the stream ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from opentelemetry.trace import Span

from adapters.base import Chunk
from adapters.errors import BackendError, BackendRateLimited, BackendRejected, BackendTimeout
from gateway.policy import Candidate
from gateway.routing import spans
from gateway.routing.attempts import Trace
from gateway.routing.pool import BackendState


@dataclass(slots=True)
class Opened:
    """A stream whose first chunk has arrived. The backend stays reserved (``in_flight``,
    breaker probe slot) until ``release`` — which ``relay`` calls when
    the stream ends, and the HTTP layer calls again (harmlessly) when the response closes."""

    first: Chunk
    rest: AsyncGenerator[Chunk, None]
    candidate: Candidate
    state: BackendState
    trace: Trace
    started: float
    released: bool = False
    span: Span | None = None  # the attempt's trace span (tracing on), ended at the release

    async def release(self, error: BackendError | None = None, *, ok: bool = False) -> None:
        if self.released:
            return
        self.released = True
        self.state.in_flight -= 1
        await close_quietly(self.rest)
        spans.released(self.span, error, ok=ok)
        breaker = self.state.breaker
        if ok:
            breaker.record_success()
        elif error is not None and counts_against(error, self.state):
            breaker.record_failure()
        else:
            breaker.release()


async def relay(opened: Opened, idle: float) -> AsyncGenerator[Chunk, None]:
    """An opened stream's chunks, its first included, each of the rest within ``idle``
    seconds (``timeouts.stream_idle_s``). Releases the backend with the right verdict however
    it ends."""
    loop = asyncio.get_running_loop()
    try:
        yield opened.first
        # One timer for the whole stream, armed only while waiting on the backend (never
        # while the client is being written to): cheaper than a new one per chunk.
        async with asyncio.timeout(None) as timer:
            while True:
                timer.reschedule(loop.time() + idle)
                try:
                    chunk = await anext(opened.rest)
                except StopAsyncIteration:
                    timer.reschedule(None)
                    await opened.release(ok=True)
                    return
                timer.reschedule(None)
                if chunk.usage is not None and opened.span is not None:
                    spans.usage(opened.span, chunk.usage)
                yield chunk
    except TimeoutError as exc:
        error = BackendTimeout(
            opened.state.name,
            f"the stream went silent for {idle} s; raise timeouts.stream_idle_s if this "
            f"backend pauses longer",
        )
        await opened.release(error)
        raise error from exc
    except BackendError as exc:
        await opened.release(exc)
        raise
    finally:
        await opened.release()


def counts_against(error: BackendError, state: BackendState) -> bool:
    """Whether ``error`` says something about the backend (its breaker counts it): not a
    rejection (the request's fault), a rate limit (busy, alive) or a timeout while it loads."""
    if isinstance(error, BackendRejected | BackendRateLimited):
        return False
    return not (isinstance(error, BackendTimeout) and not state.warm)


async def close_quietly(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()

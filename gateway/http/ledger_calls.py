"""The HTTP edge's own calls to the ledger database (feedback, reports, the dashboard): bounded
by a deadline and run on threads of their own, so a frozen database answers the client a 503
within ``LEDGER_DEADLINE_S`` instead of hanging it, and cannot take the default thread pool
(which the rest of the gateway shares) with it.

Each call runs on a daemon thread (at most ``MAX_CALLS`` at once): a call the deadline gave up
on finishes or fails on its own (the engine's TCP timeouts end it) and never holds up the
process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import ServiceUnavailable

log = structlog.get_logger("tiergate.ledger")
T = TypeVar("T")
LEDGER_DEADLINE_S = 2.0
MAX_CALLS = 4
_slots = threading.BoundedSemaphore(MAX_CALLS)


def unavailable(why: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the ledger database {why}; nothing was read or stored: try again shortly (the "
        f"gateway keeps answering requests and keeps their rows meanwhile)",
        code="ledger_unavailable",
        retry_after=5,
    )


@contextlib.asynccontextmanager
async def ledger_deadline(seconds: float = LEDGER_DEADLINE_S) -> AsyncIterator[None]:
    """Everything in the block (flushes, queries) within ``seconds``, else a 503."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise unavailable(f"did not answer within {seconds:g} s") from None


async def ledger_call(fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own; a database error is a 503 (a data error is the
    caller's to catch inside ``fn``)."""
    if not _slots.acquire(blocking=False):
        raise unavailable("is busy with earlier calls that have not come back")
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def give(value: T) -> None:
        if not future.done():  # else the caller gave up (its deadline passed)
            future.set_result(value)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def run() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the caller, whatever it is
            _slots.release()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(fail, exc)
            return
        _slots.release()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(give, value)

    threading.Thread(target=run, name="ledger-call", daemon=True).start()
    try:
        return await future
    except SQLAlchemyError as exc:
        log.warning("ledger_call_failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        raise unavailable("is unreachable") from None

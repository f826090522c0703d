"""Whether the ledger database answers, as the writer sees it.

Every statement the writer sends runs on a worker thread under a deadline (``within``): a
database that fails says so with an error, but a frozen one (it accepts, then never answers) is
noticed only by that deadline, as ``DatabaseFrozen``. The statement given up on may still be
blocked on its thread; until it returns the database counts as down, so no second one piles up
behind it. A failure (``mark_down``) sends rows to the outbox for ``retry_s``; the first
success after one (``mark_up``) says so once in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from gateway.ledger.outbox import Outbox
from gateway.metrics import Metrics

log = structlog.get_logger("tiergate.ledger")
T = TypeVar("T")


class DatabaseFrozen(OSError):
    """The database took an insert and did not answer within the writer's deadline."""


def _quietly(call: asyncio.Future[Any]) -> None:
    """A given-up insert ended: retrieve its outcome (its rows are in the outbox either way;
    the replay skips any it did write)."""
    if not call.cancelled():
        call.exception()


class Reachability:
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics | None,
        *,
        retry_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox  # where rows go meanwhile (named in the log)
        self._metrics = metrics
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._down_until = 0.0  # the database failed; go to the outbox until then
        self._stuck: asyncio.Future[Any] | None = None  # a statement given up on, still running
        self._down = False

    def is_down(self) -> bool:
        if self._stuck is not None:
            if not self._stuck.done():
                return True
            self._stuck = None
        return self._clock() < self._down_until

    async def within(self, call: Callable[[], T]) -> T:
        """``call`` on a worker thread, given up on after ``timeout_s`` (``DatabaseFrozen``)."""
        future = asyncio.ensure_future(asyncio.to_thread(call))
        try:
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            self._stuck = future
            future.add_done_callback(_quietly)
            raise DatabaseFrozen(f"no answer to a statement within {self._timeout_s:g} s") from None

    def mark_down(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._retry_s
        if not self._down:
            self._down = True
            log.error(
                "ledger_db_unreachable",
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                detail="rows go to the local outbox and are replayed when it answers",
                outbox=str(self._outbox.path),
            )
        if self._metrics is not None:
            self._metrics.ledger_errors.inc()

    def mark_up(self) -> None:
        if self._down:
            self._down = False
            log.info("ledger_db_reachable", outbox_rows=self._outbox.size)

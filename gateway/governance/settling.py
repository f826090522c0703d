"""Settling ended requests: a request's real cost replaces its budget reservation and its real
tokens its estimate. Those decided in this process (Redis away, or no Redis) are settled in
batches by ``Settler``: every ``SETTLE_EVERY_S`` the requests that ended since go to each store
in one call (a hold outlives its request by at most that long, which only errs on the safe
side). Those decided in Redis are settled by ``remote.RemoteGate``, and ``Settlements`` is told
of them (the ledger's journal)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from gateway.governance.budgets import BudgetStore, Settled
from gateway.governance.rates import RateLimiter, Subject

SETTLE_EVERY_S = 0.02  # ended requests are settled in batches this often

Correction = tuple[tuple[Subject, ...], int, int]  # subjects, tokens estimated, tokens used


class Settlements(Protocol):
    """Told which requests' settlements are on their way to Redis and when each has landed
    (the ledger's journal: ``ledger.journal.Journal``, so a killed process's answered requests
    whose cost never reached the counters are charged at the next start)."""

    def unsettled(self, rid: str) -> None: ...

    def settled(self, rids: Sequence[str]) -> None: ...


class Settler:
    """This process's settlements, sent in batches (see the module)."""

    def __init__(self, budgets: BudgetStore, rates: RateLimiter | None) -> None:
        self._budgets = budgets
        self._rates = rates
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled: list[Settled] = []
        self._corrected: list[Correction] = []
        self._flush: asyncio.TimerHandle | None = None

    def add(self, settled: Settled | None, corrected: Correction | None) -> None:
        """A request ended: its budgets' settlement and its rate limits' token correction go
        with the next batch, ``SETTLE_EVERY_S`` from the first of the batch."""
        if settled is not None:
            self._settled.append(settled)
        if corrected is not None:
            self._corrected.append(corrected)
        if (self._settled or self._corrected) and self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(SETTLE_EVERY_S, self._flush_soon)

    def charge(self, settled: Settled) -> None:
        """A charge with no request behind it: sent with the next batch, or by ``drain``."""
        self._settled.append(settled)

    def _flush_soon(self) -> None:
        self._flush = None
        task = asyncio.get_running_loop().create_task(self._settle_now(), name="budget-settle")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_now(self) -> None:
        settled, self._settled = self._settled, []
        corrected, self._corrected = self._corrected, []
        if settled:
            await self._budgets.settle_many(settled)
        if corrected and self._rates is not None:
            await self._rates.settle_many(corrected)

    async def drain(self) -> None:
        """Settle every request that has ended, now."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._settle_now()

"""Governance's part of ``/readyz``: where rate limits and budgets are kept now, Redis asked
first. A Redis that is away puts them per process, which readiness reports as degraded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from gateway.governance.rates import RateLimiter
from gateway.governance.remote import RemoteGate

READY_WAIT_S = 0.5  # the longest readiness waits for Redis's answer (probes time out at 1 s)


@dataclass(frozen=True, slots=True)
class GovernanceState:
    """For readiness: where rate limits and budgets are meant to be kept (``store``), whether
    they are (``state``), ``limits`` shared by every replica or kept ``per_process``, and why
    (``detail``: for operators, it may name Redis's address or error)."""

    store: Literal["redis", "memory"]
    state: Literal["ok", "degraded"]
    limits: Literal["shared", "per_process"]
    detail: str


class Readiness:
    """Asks Redis (``RemoteGate.check``: a PING, one at a time) and waits for it at most
    ``READY_WAIT_S``; a slow PING goes on behind the answer and serves the next probe."""

    def __init__(self) -> None:
        self._checking: asyncio.Future[str | None] | None = None

    async def check(self, remote: RemoteGate | None, rates: RateLimiter | None) -> GovernanceState:
        if remote is None:
            if rates is None:
                return GovernanceState("memory", "ok", "per_process", "no rate limiter")
            state, detail = rates.state()
            shared = rates.kind == "redis" and state == "ok"
            return GovernanceState(rates.kind, state, "shared" if shared else "per_process", detail)
        checking = self._checking
        if checking is None or checking.done():
            checking = self._checking = asyncio.ensure_future(remote.check())
        try:
            async with asyncio.timeout(READY_WAIT_S):
                outage = await asyncio.shield(checking)
        except TimeoutError:
            slow = f"Redis has not answered a PING within {READY_WAIT_S:g} s"
            if remote.outage is not None:
                return GovernanceState("redis", "degraded", "per_process", slow)
            return GovernanceState("redis", "degraded", "shared", slow)
        if outage is not None:
            return GovernanceState(
                "redis", "degraded", "per_process", f"per process while Redis is away: {outage}"
            )
        return GovernanceState("redis", "ok", "shared", "shared through Redis")

    def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()

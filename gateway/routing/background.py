"""Calls the gateway makes on its own, after the client has its answer: a canary's shadow and
judge calls, the adaptive scorer's stronger-tier and judge calls. Each is booked in the ledger as
its own row, marked by ``canary_arm`` (shadow, judge, label_strong, label_judge) so reports keep
them apart from client traffic: their cost is real, their baseline is not (they replaced
nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from adapters.base import Completion, Usage
from adapters.errors import BackendError
from gateway.ids import request_id
from gateway.ledger.entry import LedgerEntry
from gateway.policy import Policy
from gateway.routing.tasks import cancel_all


@dataclass(frozen=True, slots=True)
class Call:
    """One background call and how it went."""

    backend: str
    arm: str  # the row's canary_arm: what the call was for
    ts: datetime
    latency_ms: float
    completion: Completion | None
    error: BackendError | None


@dataclass(frozen=True, slots=True)
class Parent:
    """The client request a background call was made for."""

    key_id: str
    policy_hash: str
    route: str
    tier: str
    team: str | None = None  # the caller's team: its overhead shows in its report


def call_cost(policy: Policy, call: Call) -> Decimal:
    """What ``call`` cost (0 when it failed or its backend is unpriced)."""
    if call.completion is None:
        return Decimal(0)
    priced = policy.prices.price(call.backend, call.completion.usage, call.completion.timings)
    return priced.cost or Decimal(0)


def background_entry(
    policy: Policy, parent: Parent, call: Call, quality: float | None = None
) -> LedgerEntry:
    """The ledger row of a background call."""
    completion = call.completion
    usage = completion.usage if completion is not None else Usage()
    timings = completion.timings if completion is not None else None
    priced = policy.prices.price(call.backend, usage, timings)
    config = policy.backends.get(call.backend)
    return LedgerEntry(
        id=request_id(),
        ts=call.ts,
        key_id=parent.key_id,
        team=parent.team,
        policy_hash=parent.policy_hash,
        route=parent.route,
        tier=parent.tier,
        backend=call.backend,
        model=completion.model if completion else (config.model if config else "-"),
        score=None,
        cache="off",
        canary_arm=call.arm,
        status=200 if completion is not None else 502,
        error_class=None if call.error is None else type(call.error).__name__,
        attempts=1,
        fallback_chain=call.backend,
        stream=False,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        usage_estimated=usage.estimated,
        latency_ms=round(call.latency_ms, 3),
        ttft_ms=timings.ttft_ms if timings else None,
        server_ms=timings.server_ms if timings else None,
        load_ms=timings.load_ms if timings else None,
        # A failed call produced nothing to bill: $0 and "failed", as a client's failed request
        # (not an unknown cost, which the report would count as an unpriced backend's).
        cost_usd=priced.cost if completion is not None else Decimal(0),
        cost_source=priced.source if completion is not None else "failed",
        baseline_cost_usd=None,
        quality=quality,
    )


class Jobs:
    """The background jobs of one runner, bounded: at most ``concurrency`` run and ``queue``
    wait; beyond that ``full`` says so and the runner drops the job. Each job is held (so none
    is collected mid-way), waited for by tests (``drain``) and cancelled at shutdown
    (``aclose``); a job that raises goes to ``on_error`` and takes nothing down with it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._bounds = (1, 0)
        self._slots = asyncio.Semaphore(1)

    def __len__(self) -> int:
        return len(self._tasks)

    def bound(self, concurrency: int, queue: int) -> None:
        """New bounds (a reloaded policy's); jobs under way keep the slots they started with."""
        if (concurrency, queue) != self._bounds:
            self._bounds = (concurrency, queue)
            self._slots = asyncio.Semaphore(concurrency)

    @property
    def full(self) -> bool:
        return len(self._tasks) >= sum(self._bounds)

    def spawn(
        self, work: Callable[[], Awaitable[None]], on_error: Callable[[Exception], None]
    ) -> None:
        task = asyncio.create_task(self._run(work, self._slots, on_error), name=self._name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(
        work: Callable[[], Awaitable[None]],
        slots: asyncio.Semaphore,
        on_error: Callable[[Exception], None],
    ) -> None:
        try:
            async with slots:
                await work()
        except Exception as exc:  # background work must never take anything down with it
            on_error(exc)

    async def drain(self) -> None:
        """Wait for the jobs under way, and for any they start meanwhile."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await cancel_all(self._tasks)

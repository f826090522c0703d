"""Budget holds, on the in-process store and on Redis: a reservation takes the first option
that fits every budget, atomically; settling swaps it for the real cost; a reservation left by
a dead request expires; an unseen period asks to be seeded."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.governance.budgets import (
    NONE_FITS,
    UNSEEDED,
    BudgetStore,
    Hold,
    MemoryBudgets,
    RedisBudgets,
    to_nano,
)
from gateway.governance.grants import Allowance

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def hold(kind: str, budget: str, period: str = "month") -> Hold:
    allowance = Allowance(kind=kind, id=f"{kind}-1", budget_usd=Decimal(budget), period=period)  # type: ignore[arg-type]
    return Hold.of(allowance, NOW)


def make_store(url: str | None, clock: Clock) -> BudgetStore:
    return MemoryBudgets(clock) if url is None else RedisBudgets(url, clock=clock)


async def test_reserve_takes_the_first_option_that_fits_every_budget(store_url: str | None) -> None:
    clock = Clock()
    store = make_store(store_url, clock)
    key, team = hold("key", "1.00"), hold("team", "0.50")
    got = await store.reserve([key, team], [to_nano(Decimal("0.1"))], "r0", clock.now + 60)
    assert got.index == UNSEEDED
    assert got.left == (0,)
    await store.seed(key, to_nano(Decimal("0.20")), NOW)
    got = await store.reserve([key, team], [to_nano(Decimal("0.1"))], "r0", clock.now + 60)
    assert got.index == UNSEEDED
    assert got.left == (1,)
    await store.seed(team, to_nano(Decimal("0.30")), NOW)
    # left: key 0.80, team 0.20 → 0.30 does not fit the team, 0.15 does
    options = [to_nano(Decimal("0.30")), to_nano(Decimal("0.15")), 0]
    got = await store.reserve([key, team], options, "r1", clock.now + 60)
    assert got.index == 1
    assert got.left == (to_nano(Decimal("0.80")), to_nano(Decimal("0.20")))
    got = await store.reserve([key, team], options, "r2", clock.now + 60)
    assert got.index == 2  # 0.05 left on the team: only the free option
    got = await store.reserve([key, team], options[:2], "r3", clock.now + 60)
    assert got.index == NONE_FITS
    assert got.left[1] == to_nano(Decimal("0.05"))
    # r1 ends having cost 0.01: its 0.15 hold becomes 0.01 of spend
    await store.settle([key, team], "r1", to_nano(Decimal("0.01")))
    got = await store.reserve([key, team], options[:2], "r4", clock.now + 60)
    assert got.index == 1
    assert got.left[1] == to_nano(Decimal("0.19"))
    await store.aclose()


async def test_a_dead_requests_reservation_expires(store_url: str | None) -> None:
    clock = Clock()
    store = make_store(store_url, clock)
    only = hold("key", "1.00")
    await store.seed(only, 0, NOW)
    amount = [to_nano(Decimal("0.8"))]
    assert (await store.reserve([only], amount, "dead", clock.now + 30)).index == 0
    assert (await store.reserve([only], amount, "next", clock.now + 30)).index == NONE_FITS
    clock.now += 31  # past the dead request's deadline and margin
    assert (await store.reserve([only], amount, "next", clock.now + 30)).index == 0
    await store.aclose()


async def test_concurrent_reservations_never_pass_the_budget(store_url: str | None) -> None:
    clock = Clock()
    stores = [make_store(store_url, clock) for _ in range(1 if store_url is None else 2)]
    only = hold("team", "1.00", "day")
    await stores[0].seed(only, 0, NOW)
    amount = [to_nano(Decimal("0.07"))]

    async def one(i: int) -> int:
        store = stores[i % len(stores)]
        return (await store.reserve([only], amount, f"r{i}", clock.now + 60)).index

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results.count(0) == 14  # 14 × 0.07 = 0.98 ≤ 1.00 < 15 × 0.07
    assert results.count(NONE_FITS) == 36
    for store in stores:
        await store.aclose()


async def test_redis_down_keeps_budgets_in_the_process(private_redis: object) -> None:
    from structlog.testing import capture_logs

    from tests.support.redis import PrivateRedis

    assert isinstance(private_redis, PrivateRedis)
    clock = Clock()
    store = RedisBudgets(private_redis.url(), clock=clock, timeout_s=0.3)
    only = hold("key", "1.00")
    await store.seed(only, 0, NOW)
    private_redis.stop(signal.SIGKILL)
    with capture_logs() as logs:
        got = await store.reserve([only], [to_nano(Decimal("0.5"))], "r1", clock.now + 60)
        assert got.index == UNSEEDED  # the process's own book starts empty: seeded again
        await store.seed(only, to_nano(Decimal("0.6")), NOW)
        got = await store.reserve([only], [to_nano(Decimal("0.5"))], "r1", clock.now + 60)
        assert got.index == NONE_FITS
        got = await store.reserve([only], [to_nano(Decimal("0.3"))], "r2", clock.now + 60)
        assert got.index == 0
    warnings = [e for e in logs if e["event"] == "budgets_local"]
    assert len(warnings) == 1
    await store.aclose()


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", "2026-12-04T00:00:00+00:00", "2026-12-05T00:00:00+00:00"),
        ("week", "2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00"),
        ("month", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("total", "1970-01-01T00:00:00+00:00", None),
    ],
)
def test_periods(period: str, start: str, end: str | None) -> None:
    h = hold("key", "1", period)
    assert h.start.isoformat() == start
    assert (h.resets.isoformat() if h.resets else None) == end


async def test_many_requests_settle_in_one_call(store_url: str | None) -> None:
    from gateway.governance.budgets import Settled

    clock = Clock()
    store = make_store(store_url, clock)
    key, team = hold("key", "1.00"), hold("team", "1.00")
    await store.seed(key, 0, NOW)
    await store.seed(team, 0, NOW)
    amount = [to_nano(Decimal("0.3"))]
    for rid in ("a", "b", "c"):
        assert (await store.reserve([key, team], amount, rid, clock.now + 60)).index == 0
    assert (await store.reserve([key, team], amount, "d", clock.now + 60)).index == NONE_FITS
    ended = [Settled((key, team), rid, to_nano(Decimal("0.1"))) for rid in ("a", "b")]
    ended.append(Settled((key,), "c", to_nano(Decimal("0.2"))))  # a hold on the key alone
    await store.settle_many(ended)
    got = await store.reserve([key, team], amount, "d", clock.now + 60)
    # key: 1 - 0.4 spent; team: 1 - 0.2 spent - 0.3 still held for "c"
    assert got.index == 0
    assert got.left == (to_nano(Decimal("0.6")), to_nano(Decimal("0.5")))
    await store.aclose()

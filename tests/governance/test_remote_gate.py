"""The gate's Redis side: the admissions of one event-loop turn go to Redis in one script call,
each with its own verdict, never reserving past a budget or counting past a limit, rate limits
and budget all or nothing; a settlement rides on the next admission's call; a call that fails
(Redis frozen mid-call) sends its requests to the process's own counters, with one warning each.

Call counts are read from a private redis-server's own command statistics (nobody else's calls
in them). Its clock is injected: no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from gateway.governance.budgets import NONE_FITS, UNSEEDED, Hold, Settled, to_nano
from gateway.governance.gate_script import BUDGET_PREFIX, Answer, Ask
from gateway.governance.grants import Allowance
from gateway.governance.remote import RemoteGate, Unavailable
from gateway.governance.resp import Address
from gateway.governance.store import LimitsIn
from gateway.governance.windows import Check
from gateway.ledger.db import make_engine, upgrade
from tests.governance.test_budgets_in_gateway import ask, bearer, instance, write_policy
from tests.support.redis import PrivateRedis

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
WINDOW_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * WINDOW_S + 10.0

    def __call__(self) -> float:
        return self.now


def usd(text: str) -> int:
    return to_nano(Decimal(text))


def budget(amount: str) -> Hold:
    allowance = Allowance(kind="key", id=f"k-{uuid.uuid4().hex[:8]}", budget_usd=Decimal(amount))
    return Hold.of(allowance, NOW)


def rpm(limit: int) -> Check:
    return Check("key:k-1:requests", f"key:k-{uuid.uuid4().hex[:8]}:r", "requests", limit, 1)


def calls(client: redis.Redis) -> int:
    """The script calls the server has run (EVALSHA, and EVAL after a NOSCRIPT)."""
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def held(client: redis.Redis, hold: Hold) -> int:
    """What the hold's reservations add up to, from the members and from the running sum."""
    members: list[bytes] = client.zrange(f"{BUDGET_PREFIX}{hold.name}:holds", 0, -1)  # type: ignore[assignment]
    total = sum(int(m.split()[1]) for m in members if m != b"~")
    assert int(client.get(f"{BUDGET_PREFIX}{hold.name}:holds:sum") or 0) == total
    return total


async def test_one_call_decides_a_batch_each_its_own_verdict(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    only, limit = budget("1.00"), rpm(100)
    await gate.seed(only, 0, NOW)
    await gate.admit(Ask((rpm(1),), (), (), "warm", clock.now + 60))  # the script is cached
    before = calls(client)
    answers = await asyncio.gather(
        *(
            gate.admit(Ask((limit,), (only,), (usd("0.07"),), f"r{i}", clock.now + 60))
            for i in range(50)
        )
    )
    assert calls(client) - before == 1  # 50 admissions, one script call
    taken = [a for a in answers if a.reserved.index == 0]
    assert len(taken) == 14  # 14 × 0.07 = 0.98 ≤ 1.00 < 15 × 0.07
    assert all(a.reserved.index == NONE_FITS for a in answers[14:])
    # each saw the budget as the requests before it in the batch had left it
    assert [a.reserved.left[0] for a in taken] == [usd("1.00") - i * usd("0.07") for i in range(14)]
    assert held(client, only) == 14 * usd("0.07")
    # the budget's refusals took nothing from the rate limit: 14 counted, not 50
    assert [a.counts[0].cur for a in taken] == list(range(1, 15))
    assert answers[-1].counts[0].cur == 14
    assert answers[-1].fits
    await gate.aclose()


async def test_a_rate_refusal_takes_nothing_from_the_budget(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    only, limit = budget("1.00"), rpm(10)
    await gate.seed(only, 0, NOW)
    answers = await asyncio.gather(
        *(
            gate.admit(Ask((limit,), (only,), (usd("0.07"),), f"r{i}", clock.now + 60))
            for i in range(20)
        )
    )
    assert [a.fits for a in answers] == [True] * 10 + [False] * 10
    assert held(client, only) == 10 * usd("0.07")  # the 10 refused hold nothing
    assert all(a.reserved.left[0] == usd("0.30") for a in answers[10:])
    await gate.aclose()


async def test_an_unseeded_budget_asks_to_be_seeded_and_counts_nothing(
    private_redis: PrivateRedis,
) -> None:
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    seeded, fresh, limit = budget("1.00"), budget("1.00"), rpm(5)
    await gate.seed(seeded, 0, NOW)
    request = Ask((limit,), (seeded, fresh), (usd("0.1"),), "r1", clock.now + 60)
    first = await gate.admit(request)
    assert first.reserved.index == UNSEEDED
    assert first.reserved.left == (1,)
    await gate.seed(fresh, usd("0.95"), NOW)
    second = await gate.admit(request)
    assert second.reserved.index == NONE_FITS  # the ledger's 0.95 spent leaves 0.05
    assert second.counts[0].cur == 0  # neither answer counted the request
    await gate.aclose()


async def test_a_settlement_rides_on_the_next_admission(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    # the fallback timer cannot fire within the test: only the admission can carry it
    gate = RemoteGate(private_redis.url(), clock=clock, settle_every_s=3600)
    only = budget("1.00")
    tokens = Check("key:k-1:tokens", f"key:k-{uuid.uuid4().hex[:8]}:t", "tokens", 10_000, 500)
    await gate.seed(only, 0, NOW)
    first = await gate.admit(Ask((tokens,), (only,), (usd("0.6"),), "r1", clock.now + 60))
    assert first.reserved.index == 0
    assert first.counts[0].cur == 500
    before = calls(client)
    gate.settle(Settled((only,), "r1", usd("0.1"), usd("0.6")), [(tokens, -380)])  # 120 tokens used
    assert held(client, only) == usd("0.6")  # nothing sent yet
    second: Answer = await gate.admit(Ask((tokens,), (only,), (usd("0.6"),), "r2", clock.now + 60))
    assert calls(client) - before == 1  # the settlement took no call of its own
    # r1's 0.6 hold became its 0.1 cost before r2 was decided, so r2's 0.6 fitted
    assert second.reserved.index == 0
    assert second.reserved.left == (usd("0.9"),)
    assert client.get(f"{BUDGET_PREFIX}{only.name}:spent") == str(usd("0.1")).encode()
    assert second.counts[0].cur == 120 + 500  # the tokens window corrected, then counted
    await gate.aclose()


async def test_a_settlement_alone_goes_out_on_flush(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock, settle_every_s=3600)
    only = budget("1.00")
    await gate.seed(only, 0, NOW)
    await gate.admit(Ask((), (only,), (usd("0.6"),), "r1", clock.now + 60))
    gate.settle(Settled((only,), "r1", usd("0.2"), usd("0.6")), [])
    await gate.flush()
    assert held(client, only) == 0
    assert client.get(f"{BUDGET_PREFIX}{only.name}:spent") == str(usd("0.2")).encode()
    await gate.aclose()


async def test_a_flushed_script_cache_is_refilled(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    limit = rpm(10)
    assert (await gate.admit(Ask((limit,), (), (), "r1", clock.now + 60))).fits
    client.script_flush()
    again = await gate.admit(Ask((limit,), (), (), "r2", clock.now + 60))
    assert again.fits
    assert again.counts[0].cur == 2
    await gate.aclose()


async def test_redis_frozen_mid_call_fails_the_batch_with_one_warning_each(
    private_redis: PrivateRedis,
) -> None:
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock, timeout_s=0.05, retry_s=5.0)
    limit = rpm(10)
    assert (await gate.admit(Ask((limit,), (), (), "r0", clock.now + 60))).fits
    private_redis.freeze()
    with capture_logs() as logs:
        failed = await asyncio.gather(
            *(gate.admit(Ask((limit,), (), (), f"r{i}", clock.now + 60)) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(f, Unavailable) for f in failed)
        assert not gate.usable()  # not tried again before retry_s
        with pytest.raises(Unavailable):
            await gate.admit(Ask((limit,), (), (), "r9", clock.now + 60))
        private_redis.thaw()
        clock.now += 5.0
        assert gate.usable()
        back = await gate.admit(Ask((limit,), (), (), "r10", clock.now + 60))
    assert back.fits
    events = [e["event"] for e in logs]
    assert events.count("rate_limits_local") == 1
    assert events.count("budgets_local") == 1
    assert events.count("rate_limits_shared") == 1
    await gate.aclose()


async def test_redis_frozen_the_gateway_serves_on_local_limits(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    from gateway.governance import store

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    made = store.create_key(engine, "k", LimitsIn(rpm=50, budget_usd=Decimal(10)))
    async with instance(
        write_policy(tmp_path), url, private_redis.url(), governance_timeout_ms=100
    ) as (client, _):
        first = await client.post("/v1/chat/completions", json=ask(), headers=bearer(made.key))
        assert first.status_code == 200
        private_redis.freeze()
        with capture_logs() as logs:
            answers = await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=ask(), headers=bearer(made.key))
                    for _ in range(5)
                )
            )
        private_redis.thaw()
    assert [r.status_code for r in answers] == [200] * 5
    events = [e["event"] for e in logs]
    assert events.count("rate_limits_local") == 1
    assert events.count("budgets_local") == 1
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:6380/3", ("127.0.0.1", 6380, None, 3, None, None, False)),
        ("rediss://u:p%40ss@cache:7000", ("cache", 7000, None, 0, "u", "p@ss", True)),
        ("redis://:secret@localhost", ("localhost", 6379, None, 0, None, "secret", False)),
        ("unix:///run/redis.sock?db=2", (None, 6379, "/run/redis.sock", 2, None, None, False)),
    ],
)
def test_redis_urls(url: str, where: tuple[object, ...]) -> None:
    a = Address.parse(url)
    assert (a.host, a.port, a.path, a.db, a.username, a.password, a.tls) == where


def test_a_wrong_scheme_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="redis://host:port/db"):
        Address.parse("http://127.0.0.1:6379")


def test_it_runs_on_uvloop(private_redis: PrivateRedis) -> None:
    """The gateway's workers run uvloop, whose transports are not asyncio's own classes."""
    import uvloop

    clock = Clock()

    async def admit_twice() -> list[Answer]:
        gate = RemoteGate(private_redis.url(), clock=clock)
        limit = rpm(10)
        try:
            return [
                await gate.admit(Ask((limit,), (), (), f"r{i}", clock.now + 60)) for i in range(2)
            ]
        finally:
            await gate.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answers = runner.run(admit_twice())
    assert [a.counts[0].cur for a in answers] == [1, 2]


async def test_a_dead_requests_hold_expires(private_redis: PrivateRedis) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    only = budget("1.00")
    await gate.seed(only, 0, NOW)
    dead = await gate.admit(Ask((), (only,), (usd("0.8"),), "dead", clock.now + 30))
    assert dead.reserved.index == 0  # never settled: its process was killed
    refused = await gate.admit(Ask((), (only,), (usd("0.5"),), "r1", clock.now + 30))
    assert refused.reserved.index == NONE_FITS
    clock.now += 31
    again = await gate.admit(Ask((), (only,), (usd("0.5"),), "r2", clock.now + 30))
    assert again.reserved.index == 0
    assert again.reserved.left == (usd("1.00"),)
    assert held(client, only) == usd("0.5")
    assert client.ttl(f"{BUDGET_PREFIX}{only.name}:holds") > 0  # gone with its period
    await gate.aclose()


async def test_a_key_with_routes_only_asks_redis_nothing(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    from gateway.governance.budgets import MemoryBudgets
    from gateway.governance.gate import Governor
    from gateway.governance.grants import Grant
    from gateway.governance.rates import RateLimiter
    from gateway.policy import Candidate, Decision
    from gateway.policy.load import load_policy

    client = private_redis.server.client()
    policy = load_policy(write_policy(tmp_path))
    gate = RemoteGate(private_redis.url())
    governor = Governor(MemoryBudgets(), RateLimiter(None), None, remote=gate)
    grant = Grant("k-1", "k", routes=frozenset({"auto"}), virtual=True)
    before = calls(client)
    planned = Decision("auto", "tiny", (Candidate("tiny", "tiny"),), False, ())
    admitted = await governor.admit(
        grant,
        policy,
        planned,
        rid="r1",
        prompt_tokens=10,
        max_tokens=10,
        fits=lambda _: True,
        deadline_s=30.0,
    )
    assert admitted.decision is planned
    assert not admitted.shared
    assert calls(client) == before
    await governor.aclose()

"""The shared gate's lease fast path (gateway/governance/leases.py): far from its limits a
request is admitted without a call, from slices each replica took from Redis; what they admit
reaches Redis's counters exactly once pushed and given back; near a limit every request is
decided in Redis again; and two replicas admitting at once never spend past a budget or count
past a rate limit.

Redis is a private redis-server; the gates' clock is injected (fixed: nothing goes idle and no
window ends unless a test says so). No test waits for time to pass: ``asyncio.sleep(0)`` only
lets the event loop turn, as it does between requests in the gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from gateway.governance import store
from gateway.governance.budgets import NONE_FITS, Hold, Settled
from gateway.governance.gate_script import BUDGET_PREFIX, Answer, Ask
from gateway.governance.lease_state import SHARE
from gateway.governance.leases import RESERVE
from gateway.governance.rates import PREFIX
from gateway.governance.remote import RemoteGate
from gateway.governance.store import LimitsIn
from gateway.governance.windows import Check
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from tests.governance.test_budgets_in_gateway import bearer, instance, write_policy
from tests.governance.test_remote_gate import NOW, WINDOW_S, Clock, budget, calls, held, usd
from tests.support.redis import PrivateRedis


def limit(dimension: str, limit: int, cost: int) -> Check:
    key = f"key:k-{uuid.uuid4().hex[:8]}:{dimension[0]}"
    return Check(f"{key}:{dimension}", key, dimension, limit, cost)


def window(client: object, check: Check, clock: Clock) -> int:
    """The check's count in the current window, as Redis has it."""
    import redis

    assert isinstance(client, redis.Redis)
    return int(client.get(f"{PREFIX}{check.key}:{int(clock.now // WINDOW_S)}") or 0)


def spent(client: object, hold: Hold) -> int:
    import redis

    assert isinstance(client, redis.Redis)
    return int(client.get(f"{BUDGET_PREFIX}{hold.name}:spent") or 0)


async def decide(gate: RemoteGate, ask: Ask) -> Answer:
    """As the gateway does: from the gate's leases when they cover it, else from Redis."""
    return gate.admit_leased(ask) or await gate.admit(ask)


async def test_two_replicas_leased_admissions_reach_the_shared_counters_exactly(
    private_redis: PrivateRedis,
) -> None:
    client = private_redis.server.client()
    clock = Clock()
    one = RemoteGate(private_redis.url(), clock=clock)
    two = RemoteGate(private_redis.url(), clock=clock)
    money = budget("100.00")  # a lease of 1.5625: 156 requests of 0.01
    requests = limit("requests", 100_000, 1)
    tokens = limit("tokens", 10_000_000, 0)
    await one.seed(money, 0, NOW)
    before = calls(client)
    leased = 0
    for i in range(400):
        gate = one if i % 2 else two
        ask = Ask((requests, replace(tokens, cost=500)), (money,), (usd("0.01"),), f"r{i}", 9e9)
        answer = await decide(gate, ask)
        assert answer.fits
        assert answer.reserved.index == 0
        leased += answer.leased
        # 120 tokens used of the 500 counted, 0.004 spent of the 0.01 held
        gate.settle(Settled((money,), f"r{i}", usd("0.004"), usd("0.01")), [(tokens, -380)])
        await asyncio.sleep(0)
    assert leased >= 300  # most without a call of their own
    assert calls(client) - before < 100
    for gate in (one, two):
        await gate.flush()
    # every cost pushed: the spend is exact; what is held is the replicas' leases, no more
    assert spent(client, money) == 400 * usd("0.004")
    assert 0 < held(client, money) <= 2 * (money.limit // SHARE * 3 // 2)  # < 1.5 leases each
    assert window(client, requests, clock) >= 400  # the requests, and the leases' unused parts
    for gate in (one, two):
        await gate.give_back()
    assert held(client, money) == 0
    assert spent(client, money) == 400 * usd("0.004")
    assert window(client, requests, clock) == 400
    assert window(client, tokens, clock) == 400 * 120
    for gate in (one, two):
        await gate.aclose()


async def test_near_a_rate_limit_every_request_is_decided_in_redis(
    private_redis: PrivateRedis,
) -> None:
    clock = Clock()
    gate = RemoteGate(private_redis.url(), clock=clock)
    rpm = limit("requests", 1024, 1)  # leases of 16, granted while 128 more stay free
    chunk = rpm.limit // SHARE
    answers = []
    for i in range(1100):
        answers.append(await decide(gate, Ask((rpm,), (), (), f"r{i}", 9e9)))
        await asyncio.sleep(0)
    admitted = [a for a in answers if a.fits]
    assert len(admitted) == 1024  # the limit exactly: no lease left anything unused
    assert not any(a.fits for a in answers[1024:])
    last_grant = rpm.limit - RESERVE * chunk  # no lease may end past it
    assert sum(a.leased for a in answers[:last_grant]) >= 700
    assert not any(a.leased for a in answers[last_grant:])
    await gate.aclose()


async def test_near_a_budget_every_request_is_decided_in_redis(
    private_redis: PrivateRedis,
) -> None:
    client = private_redis.server.client()
    clock = Clock()
    # Settlements go with the gate's next call only, never on the 20 ms wall-clock timer: when
    # that timer fired depended on the machine's load, and with it what Redis had seen spent
    # when a lease was asked for (a lease could still be granted past 5.60 on a busy host).
    gate = RemoteGate(private_redis.url(), clock=clock, settle_every_s=3600.0)
    money = budget("6.40")  # a lease of 0.10: 10 requests of 0.01
    await gate.seed(money, 0, NOW)
    answers = []
    for i in range(700):
        answer = await decide(gate, Ask((), (money,), (usd("0.01"),), f"r{i}", 9e9))
        answers.append(answer)
        if answer.reserved.index == 0:  # each spends its whole worst case
            gate.settle(Settled((money,), f"r{i}", usd("0.01"), usd("0.01")), [])
        await asyncio.sleep(0)
    taken = [a.reserved.index == 0 for a in answers]
    assert sum(taken) == 640  # the budget exactly
    assert all(a.reserved.index == NONE_FITS for a in answers[640:])
    # leases only while a lease and 8 more fit: from 5.60 on, every request asks Redis
    assert sum(a.leased for a in answers[:560]) >= 400
    assert not any(a.leased for a in answers[560:])
    await gate.flush()
    assert spent(client, money) == money.limit
    await gate.aclose()


async def test_two_replicas_at_once_never_pass_a_budget_or_a_rate_limit(
    private_redis: PrivateRedis,
) -> None:
    client = private_redis.server.client()
    clock = Clock()
    gates = [RemoteGate(private_redis.url(), clock=clock) for _ in range(2)]
    money = budget("6.40")
    rpm = limit("requests", 5000, 1)
    await gates[0].seed(money, 0, NOW)
    admitted = leased = 0
    for turn in range(100):
        asks = [
            (gates[i % 2], Ask((rpm,), (money,), (usd("0.01"),), f"t{turn}-{i}", 9e9))
            for i in range(50)
        ]
        answers = await asyncio.gather(*(decide(gate, ask) for gate, ask in asks))
        for (gate, ask), answer in zip(asks, answers, strict=True):
            if answer.reserved.index == 0:
                gate.settle(Settled((money,), ask.rid, usd("0.01"), usd("0.01")), [])
        took = sum(a.reserved.index == 0 for a in answers)
        admitted += took
        leased += sum(a.leased for a in answers)
        # what Redis has spent and holds (leases included) never passes the budget
        assert spent(client, money) + held(client, money) <= money.limit
        if not took:
            break
    assert leased > 0
    assert admitted == 640  # every cent of the budget, and not one more
    for gate in gates:
        await gate.aclose()
    assert spent(client, money) == money.limit
    assert window(client, rpm, clock) == admitted


async def test_two_app_instances_with_leases_stay_inside_the_budget(
    tmp_path: Path, pg_cluster: object, redis_url: str
) -> None:
    """Through the gateway: a budget big enough for leases (a request's worst case, 1 prompt
    token and 3 to write at $1000 per million, is 1/600 of it), 50 requests at a time over two
    instances until it refuses."""
    from tests.support import postgres

    assert isinstance(pg_cluster, postgres.Cluster)
    budget_usd = Decimal("2.40")
    body = {"model": "hard", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        engine = make_engine(url)
        limits = LimitsIn(budget_usd=budget_usd, period="day", on_exhausted="reject")
        made = store.create_key(engine, "leased", limits)
        policy = write_policy(tmp_path)
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        async with (
            instance(policy, url, redis_url, outbox_path=tmp_path / "one/o.db") as (a, app_a),
            instance(policy, url, redis_url, outbox_path=tmp_path / "two/o.db") as (b, app_b),
        ):

            async def call(i: int) -> httpx.Response:
                return await (a if i % 2 else b).post(
                    "/v1/chat/completions", json=body, headers=bearer(made.key)
                )

            served = 0
            for _ in range(40):
                statuses = [r.status_code for r in await asyncio.gather(*map(call, range(50)))]
                assert set(statuses) <= {200, 429}
                served += statuses.count(200)
                if 200 not in statuses:
                    break
            assert statuses == [429] * 50
            remotes = [app.state.governor.remote for app in (app_a, app_b)]
            assert all(remote.leased_admissions > 0 for remote in remotes)
            for app in (app_a, app_b):
                await app.state.governor.drain()
                await app.state.ledger.flush()
        with engine.connect() as conn:
            costs = conn.execute(select(RequestRow.cost_usd)).scalars().all()
        assert len(costs) == served
        total = sum((c or Decimal(0) for c in costs), Decimal(0))
        assert total <= budget_usd  # never past it
        # and used up, but for what the two replicas' leases may hold unused (a lease each)
        assert total >= budget_usd - 2 * budget_usd / SHARE
        engine.dispose()


async def test_leases_follow_the_setting(tmp_path: Path, redis_url: str) -> None:
    """TIERGATE_GOVERNANCE_LEASES: on (the default), requests far from a budget are admitted
    from this replica's slices; off, every one is decided in Redis."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    limits = LimitsIn(budget_usd=Decimal("100"), period="day", on_exhausted="reject")
    made = store.create_key(engine, "ops", limits)
    engine.dispose()
    policy = write_policy(tmp_path)
    body = {"model": "hard", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    leased: dict[bool, int] = {}
    for on in (True, False):
        async with instance(policy, url, redis_url, governance_leases=on) as (client, app):
            for _ in range(20):
                answer = await client.post(
                    "/v1/chat/completions", json=body, headers=bearer(made.key)
                )
                assert answer.status_code == 200
            remote = app.state.governor.remote
            assert remote.leasing is on
            leased[on] = remote.leased_admissions
    assert leased[True] > 0
    assert leased[False] == 0


async def test_each_settlement_is_reported_landed_once_its_cost_is_in_redis(
    private_redis: PrivateRedis,
) -> None:
    """What the journal's settlement markers hear (``RemoteGate.landed``): every request, once,
    whether decided in Redis or from a lease, and only once its cost is in Redis's spend."""
    client = private_redis.server.client()
    gate = RemoteGate(private_redis.url(), clock=Clock())
    money = budget("100.00")
    await gate.seed(money, 0, NOW)
    landed: list[str] = []

    def told(rids: Sequence[str]) -> None:
        landed.extend(rids)
        assert spent(client, money) >= len(landed) * usd("0.004")  # already counted there

    gate.landed = told
    leased = 0
    for i in range(300):
        answer = await decide(gate, Ask((), (money,), (usd("0.01"),), f"r{i}", 9e9))
        assert answer.reserved.index == 0
        leased += answer.leased
        gate.settle(Settled((money,), f"r{i}", usd("0.004"), usd("0.01")), ())
        await asyncio.sleep(0)
    await gate.flush()
    assert 0 < leased < 300  # both ways
    assert sorted(landed) == sorted(f"r{i}" for i in range(300))
    assert spent(client, money) == 300 * usd("0.004")
    await gate.aclose()

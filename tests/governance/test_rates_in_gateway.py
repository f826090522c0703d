"""Rate limits through the gateway: OpenAI's headers on every answer, a 429 with retry-after
past the limit, one limit shared by two app instances on one Redis, and Redis down: requests
still served, one warning."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from gateway.governance import store
from gateway.governance.store import LimitsIn
from gateway.ledger.db import make_engine, upgrade
from tests.governance.test_budgets_in_gateway import ADMIN, ask, bearer, instance, write_policy
from tests.support.redis import PrivateRedis

CHAT = "/v1/chat/completions"


async def test_headers_on_every_answer_and_a_429_past_the_limit(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    store.put_team(engine, "t", LimitsIn(rpm=100))
    made = store.create_key(engine, "k", LimitsIn(rpm=3, tpm=10_000), team="t")
    async with instance(write_policy(tmp_path), url, redis_url) as (client, _):
        answers = [
            await client.post(CHAT, json=ask("auto"), headers=bearer(made.key)) for _ in range(4)
        ]
        metrics = (await client.get("/metrics", headers=bearer(ADMIN))).text
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in answers[:3]]
    assert remaining == [2, 1, 0]  # the key's 3, tighter than the team's 100
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in answers)
    assert all("x-ratelimit-remaining-tokens" in r.headers for r in answers)
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert made.id in refused.json()["error"]["message"]
    assert 'tiergate_governance_total{outcome="rate_limit_exceeded",route="auto"} 1.0' in metrics


async def test_two_instances_share_one_limit(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    made = store.create_key(engine, "shared", LimitsIn(rpm=40))
    policy = write_policy(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    async with (
        instance(policy, url, redis_url, outbox_path=one / "o.db") as (a, _),
        instance(policy, url, redis_url, outbox_path=two / "o.db") as (b, _),
    ):
        answers = await asyncio.gather(
            *(
                (a if i % 2 else b).post(CHAT, json=ask("auto"), headers=bearer(made.key))
                for i in range(100)
            )
        )
    allowed = sum(r.status_code == 200 for r in answers)
    assert abs(allowed - 40) <= 2  # ±5% of one limit, not 40 per instance
    assert {r.status_code for r in answers} == {200, 429}


async def test_redis_down_limits_per_process_and_serves(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    made = store.create_key(engine, "k", LimitsIn(rpm=5, budget_usd=Decimal(10)))
    async with instance(write_policy(tmp_path), url, private_redis.url()) as (client, _):
        first = await client.post(CHAT, json=ask("auto"), headers=bearer(made.key))
        assert first.status_code == 200
        private_redis.stop(signal.SIGKILL)
        with capture_logs() as logs:
            answers = [
                await client.post(CHAT, json=ask("auto"), headers=bearer(made.key))
                for _ in range(6)
            ]
    statuses = [r.status_code for r in answers]
    assert statuses[:5] == [200] * 5  # the process's own window starts empty
    assert statuses[5] == 429
    events = [e["event"] for e in logs]
    assert events.count("rate_limits_local") == 1
    assert events.count("budgets_local") == 1

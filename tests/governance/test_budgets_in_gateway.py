"""Budgets through the gateway: a key whose budget cannot cover the remote tier steps down to
local, then tiny, then is refused with OpenAI's 429 shape; 50 concurrent requests on two app
instances (one PostgreSQL, one Redis) never spend past the budget; a revoked key is refused
by the other instance within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.governance import store
from gateway.governance.refusals import usd
from gateway.governance.store import LimitsIn
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from tests.http.helpers import gateway

ADMIN = "admin-key-0123456789abcdef"
POLICY = """
version: 1
backends:
  tiny: {type: fake, model: tiny-model}
  local: {type: fake, model: local-model}
  remote: {type: fake, model: remote-model}
tiers:
  - {name: tiny, max_score: 0.2, backends: [tiny]}
  - {name: local, max_score: 0.5, backends: [local]}
  - {name: remote, backends: [remote]}
routes:
  auto: {}
  hard: {tier: remote, cache: false}
pricing:
  backends:
    tiny: {usd_per_1m_input: 10, usd_per_1m_output: 10}
    local: {usd_per_1m_input: 100, usd_per_1m_output: 100}
    remote: {usd_per_1m_input: 1000, usd_per_1m_output: 1000}
"""


def fakes(delay_ms: float = 0.0) -> dict[str, FakeBackend]:
    return {
        name: FakeBackend.scripted(
            name, FakeStep(reply=f"answer from {name}", delay_ms=delay_ms), model=f"{name}-model"
        )
        for name in ("tiny", "local", "remote")
    }


def write_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@contextlib.asynccontextmanager
async def instance(
    policy: Path, url: str, redis_url: str | None = None, delay_ms: float = 0.0, **extra: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    settings: dict[str, Any] = {"database_url": url, "admin_key": SecretStr(ADMIN), **extra}
    if redis_url is not None:
        settings["redis_url"] = SecretStr(redis_url)
    async with gateway(policy, backends=fakes(delay_ms), **settings) as pair:
        yield pair


def ask(model: str = "hard") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hello there"}],
    }


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_shrinking_budget_steps_down_then_refuses(
    tmp_path: Path, ledger_url: str, store_url: str | None
) -> None:
    """On SQLite and PostgreSQL, with the holds in the process and in Redis."""
    url = ledger_url
    upgrade(url)
    engine = make_engine(url)
    made = store.create_key(engine, "app", LimitsIn(budget_usd=Decimal("0.05"), period="day"))
    tiers: list[str] = []
    async with instance(write_policy(tmp_path), url, store_url) as (client, app):
        for _ in range(200):
            response = await client.post(
                "/v1/chat/completions", json=ask(), headers=bearer(made.key)
            )
            if response.status_code != 200:
                break
            tier = response.headers["x-tiergate-tier"]
            stepped = response.headers.get("x-tiergate-budget")
            assert (stepped == "stepped-down") == (tier != "remote")
            tiers.append(tier)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["type"] == "rate_limit_error"
        assert made.id in error["message"]
        assert "resets at" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
        await app.state.ledger.flush()
        metrics = (await client.get("/metrics", headers=bearer(ADMIN))).text
    # remote while it fits, then local, then tiny: never back up, each at least once
    order = ["remote", "local", "tiny"]
    assert tiers == sorted(tiers, key=order.index)
    assert set(tiers) == set(order)
    stepped = sum(t != "remote" for t in tiers)
    assert (
        f'tiergate_governance_total{{outcome="stepped_down",route="hard"}} {stepped}.0' in metrics
    )
    assert 'tiergate_governance_total{outcome="budget_exceeded",route="hard"} 1.0' in metrics
    with engine.connect() as conn:
        rows = conn.execute(select(RequestRow.tier, RequestRow.budget, RequestRow.cost_usd)).all()
    assert sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0)) <= Decimal("0.05")
    assert {r.tier for r in rows if r.budget == "stepped-down"} == {"local", "tiny"}
    assert {r.budget for r in rows if r.tier == "remote"} == {None}
    engine.dispose()


async def test_reject_mode_refuses_instead_of_stepping_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    limits = LimitsIn(budget_usd=Decimal("0.001"), on_exhausted="reject")
    made = store.create_key(engine, "strict", limits)
    async with instance(write_policy(tmp_path), url) as (client, _app):
        response = await client.post("/v1/chat/completions", json=ask(), headers=bearer(made.key))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "budget_exceeded"


MICRO_PRICED = """
version: 1
backends:
  tiny: {type: fake, model: tiny-model}
tiers:
  - {name: tiny, backends: [tiny]}
pricing:
  backends:
    tiny: {usd_per_1m_input: 0.01, usd_per_1m_output: 0.01}
"""


async def test_a_sub_cent_refusal_says_how_much_in_figures_that_are_not_zero(
    tmp_path: Path,
) -> None:
    """A $0.000001 budget spent a few cents-millionths at a time: the refusal prints what is
    left and what the request may cost with their significant figures, not as $0.000000."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    limits = LimitsIn(budget_usd=Decimal("0.000001"), on_exhausted="reject")
    made = store.create_key(engine, "micro", limits)
    policy = tmp_path / "policy.yaml"
    policy.write_text(MICRO_PRICED)
    async with instance(policy, url) as (client, app):
        for _ in range(50):
            response = await client.post(
                "/v1/chat/completions", json=ask("tiny"), headers=bearer(made.key)
            )
            await app.state.governor.drain()
            if response.status_code != 200:
                break
    engine.dispose()
    assert response.status_code == 429, response.text
    message = response.json()["error"]["message"]
    assert "a budget of $0.000001 " in message
    figures = re.search(
        r"\$([0-9.]+) is left and this request may cost up to \$([0-9.]+) ", message
    )
    assert figures is not None, message
    left, needed = (Decimal(figure) for figure in figures.groups())
    assert 0 < left < needed < Decimal("0.000001"), message  # both sub-micro, neither zero


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("0", "$0.00"),
        ("0.000001", "$0.000001"),
        ("0.0000012345", "$0.00000123"),
        ("0.0153", "$0.0153"),
        ("0.05", "$0.05"),
        ("0.5", "$0.50"),
        ("12.3456", "$12.35"),
    ],
)
def test_dollars_keep_three_significant_figures_below_a_dollar(amount: str, written: str) -> None:
    assert usd(Decimal(amount)) == written


async def test_a_team_budget_binds_all_its_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    store.put_team(engine, "search", LimitsIn(budget_usd=Decimal("0.000001")))
    made = store.create_key(engine, "big-key", LimitsIn(budget_usd=Decimal("100")), team="search")
    async with instance(write_policy(tmp_path), url) as (client, _app):
        response = await client.post("/v1/chat/completions", json=ask(), headers=bearer(made.key))
    assert response.status_code == 429
    assert "team 'search'" in response.json()["error"]["message"]


async def test_fifty_concurrent_requests_on_two_instances_stay_inside_the_budget(
    tmp_path: Path, pg_cluster: object, redis_url: str
) -> None:
    from tests.support import postgres

    assert isinstance(pg_cluster, postgres.Cluster)
    # Fifty answers of the remote tier cost $0.25 in all, so some are refused however the
    # requests interleave (with a budget they could all fit in, whether any was refused hung on
    # timing, and on a loaded machine none was). ``reject``: a step-down would serve them all.
    budget = Decimal("0.1")
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        engine = make_engine(url)
        limits = LimitsIn(budget_usd=budget, period="day", on_exhausted="reject")
        made = store.create_key(engine, "burst", limits)
        policy = write_policy(tmp_path)
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        async with (
            instance(policy, url, redis_url, delay_ms=50, outbox_path=one / "o.db") as (a, app_a),
            instance(policy, url, redis_url, delay_ms=50, outbox_path=two / "o.db") as (b, app_b),
        ):

            async def call(i: int) -> httpx.Response:
                client = a if i % 2 else b
                return await client.post(
                    "/v1/chat/completions", json=ask(), headers=bearer(made.key)
                )

            responses = await asyncio.gather(*(call(i) for i in range(50)))
            for app in (app_a, app_b):
                await app.state.governor.drain()
                await app.state.ledger.flush()
        statuses = [r.status_code for r in responses]
        served = [r for r in responses if r.status_code == 200]
        with engine.connect() as conn:
            costs = conn.execute(select(RequestRow.cost_usd)).scalars().all()
        assert set(statuses) == {200, 429}
        assert len(costs) == len(served)
        assert (
            sum((c or Decimal(0) for c in costs), Decimal(0)) <= budget
        )  # worst-case holds: no overshoot at all
        engine.dispose()


async def test_a_revoked_key_is_refused_by_another_instance_within_5_s(
    tmp_path: Path, pg_cluster: object
) -> None:
    from tests.support import postgres

    assert isinstance(pg_cluster, postgres.Cluster)
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        engine = make_engine(url)
        made = store.create_key(engine, "leaving", LimitsIn())
        policy = write_policy(tmp_path)
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        async with (
            instance(policy, url, outbox_path=one / "o.db") as (a, _),
            instance(policy, url, outbox_path=two / "o.db") as (b, _),
        ):
            for client in (a, b):
                ok = await client.post(
                    "/v1/chat/completions", json=ask("auto"), headers=bearer(made.key)
                )
                assert ok.status_code == 200
            store.revoke_key(engine, made.id)
            revoked = time.monotonic()
            while True:
                response = await b.post(
                    "/v1/chat/completions", json=ask("auto"), headers=bearer(made.key)
                )
                if response.status_code == 401:
                    break
                assert time.monotonic() - revoked < 5.0, "still accepted 5 s after revocation"
                await asyncio.sleep(0.05)
            assert response.json()["error"]["code"] == "invalid_api_key"
        engine.dispose()


async def test_embeddings_hold_their_input_only(tmp_path: Path) -> None:
    """An embedding writes no tokens: its worst case is its input, not the policy's largest
    max_tokens (which at the remote price would be ~$33 and refuse every embedding here)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    made = store.create_key(engine, "embedder", LimitsIn(budget_usd=Decimal("0.01")))
    async with instance(write_policy(tmp_path), url) as (client, app):
        response = await client.post(
            "/v1/embeddings", json={"model": "remote", "input": "a b c"}, headers=bearer(made.key)
        )
        await app.state.governor.drain()
    assert response.status_code == 200, response.text

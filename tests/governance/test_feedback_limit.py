"""``limits.feedback_per_key_per_minute``: one key's ``POST /v1/feedback`` calls are capped (a
429 in OpenAI's format with retry-after, naming the limit) without touching its team-mates',
another team's or the admin key's; two gateways on one Redis share the cap; the policy refuses
a limit that cannot work, naming the field."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from gateway.governance import store
from gateway.governance.store import Created, LimitsIn
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import FeedbackRow
from gateway.policy import PolicyError
from tests.governance.test_budgets_in_gateway import ADMIN, POLICY, ask, bearer, instance
from tests.http.helpers import policy_from

FEEDBACK = "/v1/feedback"


def capped_policy(tmp_path: Path, per_minute: int) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY + f"limits: {{feedback_per_key_per_minute: {per_minute}}}\n")
    return path


def three_keys(url: str) -> tuple[Engine, dict[str, Created]]:
    """Keys a1 and a2 of team alpha, b1 of team beta, on a ledger upgraded here."""
    upgrade(url)
    engine = make_engine(url)
    for team in ("alpha", "beta"):
        store.put_team(engine, team, LimitsIn())
    keys = {
        name: store.create_key(engine, name, LimitsIn(), team=team)
        for name, team in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta"))
    }
    return engine, keys


async def answered(client: httpx.AsyncClient, key: str) -> str:
    response = await client.post("/v1/chat/completions", json=ask("auto"), headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


async def rate(client: httpx.AsyncClient, key: str, rid: str, score: float) -> httpx.Response:
    return await client.post(
        FEEDBACK, json={"request_id": rid, "score": score}, headers=bearer(key)
    )


async def test_one_key_is_capped_and_nobody_else_is(tmp_path: Path, store_url: str | None) -> None:
    """In the process and through Redis: a1's fourth call in the minute is a 429; a2 (same
    team), b1 (another team) and the admin key are still served, and the refused verdict was
    not stored."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine, keys = three_keys(url)
    async with instance(capped_policy(tmp_path, 3), url, store_url) as (client, _):
        rids = {name: await answered(client, made.key) for name, made in keys.items()}
        a1 = keys["a1"].key
        kept = [(await rate(client, a1, rids["a1"], s)).status_code for s in (0, 1, 0.5)]
        refused = await rate(client, a1, rids["a1"], 0)
        others = [
            await rate(client, keys["a2"].key, rids["a2"], 1),
            await rate(client, keys["b1"].key, rids["b1"], 1),
            await rate(client, ADMIN, rids["a1"], 1),
        ]
    assert kept == [201, 201, 201]
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "feedback_rate_limit_exceeded"
    assert "3 feedback a minute" in error["message"]
    assert "limits.feedback_per_key_per_minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert [r.status_code for r in others] == [201, 201, 201]
    with engine.connect() as connection:
        mine = connection.execute(
            select(FeedbackRow.score).where(FeedbackRow.key_id == keys["a1"].id)
        ).all()
    assert mine == [(0.5,)]  # the last verdict a1 was allowed, not the refused one


async def test_two_gateways_on_one_redis_share_the_cap(tmp_path: Path, redis_url: str) -> None:
    """Replicas count one key's calls together: 4 a minute across both, not 4 each."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _, keys = three_keys(url)
    policy = capped_policy(tmp_path, 4)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    async with (
        instance(policy, url, redis_url, outbox_path=one / "o.db") as (a, app_a),
        instance(policy, url, redis_url, outbox_path=two / "o.db") as (b, _),
    ):
        key = keys["a1"].key
        rid = await answered(a, key)
        await app_a.state.ledger.flush()  # the answer's row, where b can see it
        codes = [(await rate(a if i % 2 else b, key, rid, 1)).status_code for i in range(6)]
    assert codes == [201, 201, 201, 201, 429, 429]


def test_the_policy_sets_the_cap_and_refuses_one_that_cannot_work() -> None:
    """Default 60 a minute; null turns it off; 0 or a negative is an error naming the field."""
    assert policy_from(POLICY).limits.feedback_per_key_per_minute == 60
    off = policy_from(POLICY + "limits: {feedback_per_key_per_minute: null}\n")
    assert off.limits.feedback_per_key_per_minute is None
    for bad in ("0", "-5", "2.5", "lots"):
        with pytest.raises(PolicyError) as caught:
            policy_from(POLICY + f"limits: {{feedback_per_key_per_minute: {bad}}}\n")
        assert "limits.feedback_per_key_per_minute" in str(caught.value)

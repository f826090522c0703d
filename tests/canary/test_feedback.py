"""``POST /v1/feedback``: stored in the ledger for the key's own requests, bad input named,
and shown by the report per tier and per canary arm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.ledger.models import FeedbackRow
from gateway.ledger.report import build_report
from tests.http.helpers import TWO_TIERS, gateway

CHAT = "/v1/chat/completions"
KEYS = "alice:key-a,bob:key-b"


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _answer(client: httpx.AsyncClient, key: str) -> str:
    response = await client.post(
        CHAT, json={"messages": [{"role": "user", "content": "hi"}]}, headers=_auth(key)
    )
    assert response.status_code == 200
    return response.headers["x-request-id"]


async def test_feedback_is_stored_and_reported(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy, api_keys=KEYS) as (client, app):
        rid = await _answer(client, "key-a")
        stored = await client.post(
            "/v1/feedback",
            json={"request_id": rid, "score": 0.25, "comment": "too short"},
            headers=_auth("key-a"),
        )
        assert stored.status_code == 201, stored.text
        await client.post(
            "/v1/feedback", json={"request_id": rid, "score": 1}, headers=_auth("key-a")
        )
        with Session(app.state.ledger.engine) as connection:
            rows = list(connection.execute(select(FeedbackRow)).scalars())
        # alice's second verdict on the same answer replaced her first (a re-vote)
        assert [(r.request_id, r.key_id, r.score) for r in rows] == [(rid, "alice", 1.0)]
        other = await _answer(client, "key-a")
        await client.post(
            "/v1/feedback", json={"request_id": other, "score": 0.25}, headers=_auth("key-a")
        )
        since = datetime.now(UTC) - timedelta(hours=1)
        report = build_report(app.state.ledger.engine, since=since, by="tier")
        assert report["totals"]["feedback_avg"] == 0.625
        assert report["totals"]["feedback_count"] == 2
        assert [(g["key"], g["feedback_count"]) for g in report["groups"]] == [("cheap", 2)]
        by_arm = build_report(app.state.ledger.engine, since=since, by="canary_arm")
        assert [(g["key"], g["feedback_avg"]) for g in by_arm["groups"]] == [("-", 0.625)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"request_id": "x", "score": 1.5}, "score"),
        ({"request_id": "x", "score": "good"}, "score"),
        ({"score": 1}, "request_id"),
        ({"request_id": "x", "score": 1, "stars": 5}, "stars"),
        ({"request_id": "x" * 40, "score": 1}, "request_id"),
    ],
)
async def test_bad_feedback_names_the_field(
    tmp_path: Path, body: dict[str, object], param: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy, api_keys=KEYS) as (client, _app):
        response = await client.post("/v1/feedback", json=body, headers=_auth("key-a"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_feedback_on_an_unknown_or_foreign_request_is_404(tmp_path: Path) -> None:
    """An id that is not in the ledger, or that another key made, is not found; no key at all
    is a 401."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy, api_keys=KEYS) as (client, _app):
        rid = await _answer(client, "key-a")
        unknown = await client.post(
            "/v1/feedback", json={"request_id": "nope", "score": 1}, headers=_auth("key-a")
        )
        foreign = await client.post(
            "/v1/feedback", json={"request_id": rid, "score": 0}, headers=_auth("key-b")
        )
        anonymous = await client.post("/v1/feedback", json={"request_id": rid, "score": 0})
    for response in (unknown, foreign):
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "request_id"
    assert anonymous.status_code == 401

"""Feedback the ledger cannot store is the client's mistake: a 400 naming the field, on SQLite
and on PostgreSQL alike (a NUL in a PostgreSQL text column was taken for an outage: a 503)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.ledger.db import upgrade
from gateway.ledger.models import FeedbackRow
from tests.http.helpers import TWO_TIERS, gateway


@pytest.mark.parametrize("field", ["comment", "request_id"])
async def test_a_nul_character_is_a_400_naming_the_field(
    tmp_path: Path, ledger_url: str, field: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    await asyncio.to_thread(upgrade, ledger_url)
    async with gateway(policy, database_url=SecretStr(ledger_url)) as (client, app):
        answered = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        rid = answered.headers["x-request-id"]
        body: dict[str, object] = {"request_id": rid, "score": 1, "comment": "fine"}
        body[field] = f"{rid[:35] if field == 'request_id' else 'fine'}\x00"  # within 36 chars
        refused = await client.post("/v1/feedback", json=body)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == field
        assert "NUL" in error["message"]
        stored = await client.post("/v1/feedback", json={"request_id": rid, "score": 1})
        assert stored.status_code == 201  # the database was never the problem
        with Session(app.state.ledger.engine) as session:
            assert session.scalar(select(func.count()).select_from(FeedbackRow)) == 1


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("true", "a valid number"),  # was stored as 1.0
        ('"0.5"', "a valid number"),  # was stored as 0.5
        ("NaN", "finite"),  # was "less than or equal to 1", which NaN is not about
        ("Infinity", "finite"),
    ],
)
async def test_a_score_that_is_not_a_finite_number_is_a_400_saying_so(
    tmp_path: Path, raw: str, words: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    async with gateway(policy, database_url=SecretStr(url)) as (client, app):
        answered = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        rid = answered.headers["x-request-id"]
        refused = await client.post(
            "/v1/feedback",
            content=f'{{"request_id": "{rid}", "score": {raw}}}',
            headers={"content-type": "application/json"},
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "score"
        assert words in error["message"], error["message"]
        with Session(app.state.ledger.engine) as session:
            assert session.scalar(select(func.count()).select_from(FeedbackRow)) == 0

"""A re-vote replaces: a key that rates the same answer again keeps one verdict in the ledger
(the report counts it once) and the request one routing label, its latest verdict's, in the
database and in a running replica's memory (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from gateway.ledger.adaptive import prune_samples
from gateway.ledger.db import upgrade
from gateway.ledger.models import AdaptiveLabelRow, AdaptiveSampleRow, FeedbackRow
from gateway.ledger.report import build_report
from gateway.scoring.adaptive import AdaptiveSettings, unpack
from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "small answer"}]}
  big: {type: fake, model: big-model, script: [{reply: "big answer"}]}
tiers:
  - {name: cheap, max_score: 0.9, backends: [small]}
  - {name: strong, backends: [big]}
scorer: {kind: adaptive, base: v1, refresh_s: 86400}  # the test refreshes, not the loop
"""


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def rate(client: httpx.AsyncClient, key: str, rid: str, score: float) -> httpx.Response:
    response = await client.post(
        "/v1/feedback", json={"request_id": rid, "score": score}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    return response


async def test_a_revote_replaces_the_verdict_and_the_label(tmp_path: Path, ledger_url: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    await asyncio.to_thread(upgrade, ledger_url)
    async with gateway(
        policy, database_url=SecretStr(ledger_url), api_keys="alice:key-alice-1"
    ) as (client, app):
        answer = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "how do I bake bread"}]},
            headers=bearer("key-alice-1"),
        )
        rid = answer.headers["x-request-id"]
        engine = app.state.ledger.engine
        layer = app.state.runtime.active.adaptive
        first = await rate(client, "key-alice-1", rid, 0.0)
        await layer.refresh()
        assert len(layer.index) == 1  # this replica now holds the first label (1.0)
        flips = [await rate(client, "key-alice-1", rid, s) for s in (1.0, 0.0, 0.25)]
        await layer.refresh()
        with engine.connect() as connection:
            verdicts = connection.execute(select(FeedbackRow.key_id, FeedbackRow.score)).all()
            labels = connection.execute(select(AdaptiveLabelRow.label)).all()
            embedding = connection.execute(
                select(AdaptiveSampleRow.embedding).where(AdaptiveSampleRow.request_id == rid)
            ).scalar_one()
        since = datetime.now(UTC) - timedelta(hours=1)
        report = build_report(engine, since=since, by="tier")
        held = len(layer.index)
        estimate = layer.index.estimate(
            unpack(embedding), 0.5, AdaptiveSettings(feedback_scope="shared")
        )
        # past sample_ttl_h the sample is gone; a re-vote still relabels (the label's embedding)
        await asyncio.to_thread(prune_samples, engine, datetime.now(UTC) + timedelta(hours=1))
        await rate(client, "key-alice-1", rid, 1.0)
        with engine.connect() as connection:
            relabelled = connection.execute(select(AdaptiveLabelRow.label)).all()
    assert verdicts == [("alice", 0.25)]
    assert [r.json().get("replaced") for r in (first, *flips)] == [False, True, True, True]
    assert labels == [(0.75,)]  # 1 - the latest score, once
    assert report["totals"]["feedback_count"] == 1
    assert report["totals"]["feedback_avg"] == 0.25
    assert held == 1  # the replica dropped the label the re-vote replaced
    assert estimate.neighbours == 1
    assert estimate.neighbour_mean == pytest.approx(0.75)
    assert relabelled == [(0.0,)]

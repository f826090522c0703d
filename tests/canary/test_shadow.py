"""Shadow mode in a running gateway: the client's answer is the stable backend's, unchanged;
the candidate's answer is compared and kept in the ledger; overflow is dropped and counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.canary.controller import CanaryController
from gateway.ledger.models import RequestRow
from gateway.ledger.report import build_report
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
BASE = """
version: 1
backends:
  small: {type: fake, model: small-model}
  cand: {type: fake, model: cand-model}
  judge: {type: fake, model: judge-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
"""
SHADOW = """
canary:
  name: s1
  candidate: cand
  tier: cheap
  mode: shadow
  percent: 100
  shadow: {concurrency: %d, queue: %d, judge: {backend: judge, sample: 1.0, per_minute: 100}}
  evaluate_every_s: 3600
"""
STABLE_TEXT = "The capital of France is Paris, a city on the Seine river."


def _fakes(candidate: FakeBackend) -> dict[str, FakeBackend]:
    return {
        "small": FakeBackend.scripted("small", STABLE_TEXT),
        "cand": candidate,
        "judge": FakeBackend.scripted("judge", "7"),
    }


def _policy(tmp_path: Path, shadow: bool, concurrency: int = 2, queue: int = 8) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE + (SHADOW % (concurrency, queue) if shadow else ""))
    return path


async def _answers(client: httpx.AsyncClient) -> list[Any]:
    """A plain, a streamed and a capped request: what the client sees of each."""
    messages = [{"role": "user", "content": "what is the capital of france?"}]
    seen: list[Any] = []
    whole = await client.post(CHAT, json={"messages": messages})
    seen.append((whole.status_code, whole.json()["choices"], whole.headers["x-tiergate-backend"]))
    streamed = await client.post(CHAT, json={"messages": messages, "stream": True})
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    ]
    seen.append((streamed.status_code, "".join(deltas), streamed.headers["x-tiergate-backend"]))
    capped = await client.post(CHAT, json={"messages": messages, "max_tokens": 3})
    seen.append(
        (capped.status_code, capped.json()["choices"], capped.headers["x-tiergate-backend"])
    )
    return seen


async def _rows(app: FastAPI) -> list[RequestRow]:
    canary: CanaryController = app.state.canary
    await canary.shadow.drain()
    await app.state.ledger.flush()
    with Session(app.state.ledger.engine) as connection:
        return list(connection.execute(select(RequestRow).order_by(RequestRow.ts)).scalars())


async def test_shadow_never_changes_the_clients_answer(tmp_path: Path) -> None:
    """The same requests get byte-identical answers with shadow off and on, even when the
    candidate answers differently or fails."""
    off_dir, on_dir = tmp_path / "off", tmp_path / "on"
    off_dir.mkdir()
    on_dir.mkdir()
    async with gateway(_policy(off_dir, False), backends=_fakes(FakeBackend("cand"))) as (c, _):
        without = await _answers(c)
    candidate = FakeBackend.scripted(
        "cand", "Something else entirely.", FakeStep(error="unavailable"), "Short."
    )
    async with gateway(_policy(on_dir, True), backends=_fakes(candidate)) as (client, app):
        with_shadow = await _answers(client)
        rows = await _rows(app)
    assert with_shadow == without
    arms = sorted(str(r.canary_arm) for r in rows)
    assert arms == ["judge"] * 2 + ["shadow"] * 3 + ["stable"] * 3  # judged: the 2 answers
    assert [b for *_, b in with_shadow] == ["small"] * 3
    assert len(candidate.requests) == 3


async def test_shadow_calls_are_compared_and_recorded(tmp_path: Path) -> None:
    """Each mirrored request leaves a client row (arm stable) and a shadow row (arm shadow,
    backend cand) with the comparison's quality: the judge's 0.7 caps a good answer, a failed
    call is an error row without quality; the judge's own call is booked (arm judge)."""
    candidate = FakeBackend.scripted(
        "cand",
        "Paris is the capital of France; it lies on the river Seine.",
        FakeStep(error="unavailable"),
    )
    async with gateway(_policy(tmp_path, True), backends=_fakes(candidate)) as (client, app):
        body = {"messages": [{"role": "user", "content": "capital of france?"}]}
        for _ in range(2):
            assert (await client.post(CHAT, json=body)).status_code == 200
        rows = await _rows(app)
    client_rows = [r for r in rows if r.canary_arm == "stable"]
    shadow_rows = [r for r in rows if r.canary_arm == "shadow"]
    assert [r.backend for r in client_rows] == ["small", "small"]
    assert sorted((r.status, r.quality) for r in shadow_rows) == [(200, 0.7), (502, None)]
    assert all(r.backend == "cand" and r.baseline_cost_usd is None for r in shadow_rows)
    judged = [(r.backend, r.status) for r in rows if r.canary_arm == "judge"]
    assert judged == [("judge", 200)]  # the failed call had nothing to judge


async def test_shadow_overflow_is_dropped_and_counted(tmp_path: Path) -> None:
    """With one slot and no queue, shadow calls beyond the one in flight are dropped (and
    counted); the clients are answered all the same."""
    slow = FakeBackend.scripted("cand", FakeStep(reply="late", delay_ms=600_000))
    async with gateway(_policy(tmp_path, True, 1, 0), backends=_fakes(slow)) as (client, app):
        body = {"messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert (await client.post(CHAT, json=body)).status_code == 200
        text = app.state.metrics.render().decode()
    samples = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "tiergate_canary_shadow"
        for s in family.samples
        if s.name == "tiergate_canary_shadow_total"
    }
    assert samples == {"dropped": 2.0}


async def test_shadow_and_judge_calls_are_booked_to_the_callers_team(tmp_path: Path) -> None:
    """A virtual key's request mirrored to the candidate: the shadow and judge rows carry the
    key's team like its own row, so ``tiergate report --team`` shows the overhead that team's
    traffic caused (they had no team before, and went to the "-" group)."""
    candidate = FakeBackend.scripted("cand", "Paris is the capital of France.")
    admin = {"authorization": "Bearer k-shadow-admin-1111"}
    async with gateway(
        _policy(tmp_path, True), backends=_fakes(candidate), admin_key="k-shadow-admin-1111"
    ) as (client, app):
        team = await client.post("/admin/teams", json={"name": "eng"}, headers=admin)
        assert team.status_code == 200, team.text
        made = await client.post("/admin/keys", json={"name": "web", "team": "eng"}, headers=admin)
        assert made.status_code == 201, made.text
        key = made.json()
        body = {"messages": [{"role": "user", "content": "capital of france?"}]}
        answer = await client.post(
            CHAT, json=body, headers={"authorization": f"Bearer {key['key']}"}
        )
        assert answer.status_code == 200, answer.text
        rows = await _rows(app)
    booked = sorted((str(r.canary_arm), r.key_id, r.team) for r in rows)
    assert booked == [
        ("judge", key["id"], "eng"),
        ("shadow", key["id"], "eng"),
        ("stable", key["id"], "eng"),
    ]


async def test_a_failed_shadow_call_costs_nothing_and_is_not_unpriced(tmp_path: Path) -> None:
    """A shadow call the candidate failed is booked like a client's failed request: $0,
    ``failed``. (Its cost was unknown before, so the report counted it as an unpriced backend's
    request and told the payer to give the candidate a price.)"""
    candidate = FakeBackend.scripted("cand", FakeStep(error="unavailable"))
    policy = _policy(tmp_path, True)
    prices = "pricing:\n  backends:\n    small: {usd_per_1m_input: 1, usd_per_1m_output: 2}\n"
    policy.write_text(policy.read_text() + prices)
    async with gateway(policy, backends=_fakes(candidate)) as (client, app):
        body = {"messages": [{"role": "user", "content": "capital of france?"}]}
        assert (await client.post(CHAT, json=body)).status_code == 200
        rows = await _rows(app)
        report = build_report(app.state.ledger.engine, since=datetime.now(UTC) - timedelta(hours=1))
    [shadow] = [r for r in rows if r.canary_arm == "shadow"]
    assert (shadow.status, shadow.cost_usd, shadow.cost_source) == (502, Decimal(0), "failed")
    assert report["totals"]["unpriced_requests"] == 0
    assert report["totals"]["overhead_calls"] == 1

"""``policy replay`` on a real SQLite ledger: tiers re-decided from stored scores, tokens
re-priced at the new policy's prices, expected quality from P(strong needed)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.ledger.db import make_engine
from gateway.ledger.models import Base, RequestRow
from gateway.policy import Policy, parse_policy
from gateway.tools.scorer.replay import render, replay, to_json
from tests.http.helpers import fakes, gateway
from tests.support.ledger_rows import request_row

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: %s}
  - {name: strong, backends: [strong]}
scorer: {kind: %s}
pricing:
  baseline: {usd_per_1m_input: 10, usd_per_1m_output: 20}
  backends:
    weak: {usd_per_1m_input: 1, usd_per_1m_output: 2}
    strong: {usd_per_1m_input: 10, usd_per_1m_output: 20}
"""
# Each row: 1000 prompt and 500 completion tokens: $0.002 on weak, $0.02 on strong.
WEAK, STRONG = Decimal("0.002"), Decimal("0.02")
SCORES = [0.1, 0.25, 0.4, 0.6, 0.9]


def _policy(tmp_path: Path, threshold: float, kind: str = "learned") -> Policy:
    return parse_policy((POLICY % (threshold, kind)).encode(), source="p", base_dir=tmp_path)


@pytest.fixture
def ledger(tmp_path: Path) -> Engine:
    """Five requests routed by the current policy (weak up to 0.5), one old one outside the
    window."""
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    rows = [(s, now - timedelta(hours=1)) for s in SCORES] + [(0.3, now - timedelta(days=30))]
    with Session(engine) as session:
        for n, (score, ts) in enumerate(rows):
            tier = "weak" if score <= 0.5 else "strong"
            session.add(
                request_row(
                    f"r{n}",
                    ts=ts,
                    tier=tier,
                    backend=tier,
                    score=score,
                    fallback_chain=tier,
                    prompt_tokens=1000,
                    completion_tokens=500,
                    latency_ms=10.0,
                    cost_usd=WEAK if tier == "weak" else STRONG,
                    baseline_cost_usd=STRONG,
                )
            )
        session.commit()
    return engine


def test_lower_threshold_moves_requests_up_and_costs_more(ledger: Engine, tmp_path: Path) -> None:
    """Threshold .5 → .2: the rows scored .25 and .4 move to strong."""
    since = datetime.now(UTC) - timedelta(days=7)
    result = replay(ledger, since, _policy(tmp_path, 0.5), _policy(tmp_path, 0.2))
    data = to_json(result)
    assert data["requests"] == 5
    assert data["rescored"] == 5
    assert not data["scorer_changed"]
    assert data["before"]["tiers"] == {"weak": 3, "strong": 2}
    assert data["after"]["tiers"] == {"weak": 1, "strong": 4}
    # before 3 x .002 + 2 x .02 = .046; after 1 x .002 + 4 x .02 = .082
    assert data["before"]["cost_usd"] == pytest.approx(0.046)
    assert data["after"]["cost_usd"] == pytest.approx(0.082)
    # Good enough: 1 - P(needed) below the strong tier, 1 on it.
    # before (.9 + .75 + .6 + 1 + 1) / 5 = .85; after (.9 + 1 + 1 + 1 + 1) / 5 = .98
    assert data["before"]["expected_quality"] == pytest.approx(0.85)
    assert data["after"]["expected_quality"] == pytest.approx(0.98)
    assert data["moved"] == [{"from": "weak", "to": "strong", "requests": 2}]
    assert "weak" in render(result)


def test_a_changed_scorer_keeps_the_recorded_tiers(ledger: Engine, tmp_path: Path) -> None:
    """Stored v1 scores mean nothing to the learned scorer: no re-decision, prices only."""
    since = datetime.now(UTC) - timedelta(days=7)
    result = replay(ledger, since, _policy(tmp_path, 0.5, "v1"), _policy(tmp_path, 0.2))
    data = to_json(result)
    assert data["scorer_changed"]
    assert data["rescored"] == 0
    assert data["kept_unscorable"] == 5
    assert data["after"]["tiers"] == data["before"]["tiers"]
    assert data["after"]["expected_quality"] is None
    assert "cannot be re-scored" in render(result)


V1 = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: %s}
  - {name: strong, backends: [strong]}
scorer: {kind: v1, bias: %s, weights: %s}
"""
PROMPTS = [
    ("hi there", None),
    ("What is 12 * 7 + 3? And 45 / 9 - 2?", None),
    ("Write a Python function:\n```python\ndef f(x):\n    return x;\n```\nfix it.", 64),
    ("Explain why the sky is blue, step by step, and justify each step.", 2048),
    ("Compute 3^4 - 2^5 + 17 * 3 and prove the result is odd.", None),
    ("List three colours.", 16),
    ("First sort the list, then remove duplicates, then explain why it works.", None),
]


def _policy_file(directory: Path, policy: str) -> Path:
    directory.mkdir()
    path = directory / "policy.yaml"
    path.write_text(policy)
    return path


async def _run(path: Path) -> Engine:
    """The prompts through a real gateway under the policy at ``path``; its ledger."""
    async with gateway(path, backends=fakes("weak", "strong")) as (client, _app):
        for prompt, max_tokens in PROMPTS:
            body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}]}
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    return make_engine(f"sqlite:///{path.parent / 'ledger.db'}")


def _tiers(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(Counter(connection.execute(select(RequestRow.tier)).scalars()))


async def test_new_v1_weights_replay_as_the_live_gateway_routes(tmp_path: Path) -> None:
    """Traffic recorded under one set of v1 weights, replayed under another: the ledger's kept
    features re-score every request, and the tier mix replay predicts is the one a gateway
    running the new policy gives the same requests."""
    old = V1 % (0.3, 0.0, "{}")
    new = V1 % (0.25, 0.1, "{math: 0.1, code: 0.05, reasoning: 0.5, output: 0.4}")
    recorded = await _run(_policy_file(tmp_path / "old", old))
    live = await _run(_policy_file(tmp_path / "new", new))
    try:
        result = replay(
            recorded,
            datetime.now(UTC) - timedelta(days=1),
            parse_policy(old.encode(), source="old", base_dir=tmp_path),
            parse_policy(new.encode(), source="new", base_dir=tmp_path),
        )
        data = to_json(result)
        assert data["scorer_changed"]
        assert data["rescored"] == data["rescored_from_features"] == len(PROMPTS)
        assert data["kept_unscorable"] == 0
        assert data["before"]["tiers"] == _tiers(recorded)
        assert data["after"]["tiers"] == _tiers(live)
        assert data["moved"]  # the weights change moves requests, in this sample
        assert data["after"]["tiers"] != data["before"]["tiers"]
        assert f"{len(PROMPTS)} re-scored from the v1 features" in render(result)
    finally:
        recorded.dispose()
        live.dispose()


def test_a_request_every_tier_failed_counts_in_the_tier_routing_chose(
    ledger: Engine, tmp_path: Path
) -> None:
    """A failed request's row names every tier it tried ("weak>strong"); replay compares routing
    decisions, so it counts in the first, the one routing chose: not a tier of its own, and not
    "moved" when the new policy routes it there too."""
    with Session(ledger) as session:
        session.add(
            request_row(
                "failed",
                ts=datetime.now(UTC) - timedelta(hours=1),
                tier="weak>strong",
                backend="strong",
                score=0.1,
                status=503,
                fallback_chain="weak>strong",
                latency_ms=10.0,
                cost_usd=Decimal(0),
                baseline_cost_usd=Decimal(0),
            )
        )
        session.commit()
    since = datetime.now(UTC) - timedelta(days=7)
    data = to_json(replay(ledger, since, _policy(tmp_path, 0.5), _policy(tmp_path, 0.5)))
    assert data["before"]["tiers"] == {"weak": 4, "strong": 2}
    assert data["after"]["tiers"] == {"weak": 4, "strong": 2}
    assert data["moved"] == []

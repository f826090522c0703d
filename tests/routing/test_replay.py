"""``policy replay`` on a real SQLite ledger: tiers re-decided from stored scores, tokens
re-priced at the new policy's prices, expected quality from P(strong needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.ledger.db import make_engine
from gateway.ledger.models import Base
from gateway.policy import Policy, parse_policy
from gateway.routing.replay import render, replay, to_json
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
    assert data["after"]["tiers"] == data["before"]["tiers"]
    assert data["after"]["expected_quality"] is None
    assert "cannot be re-scored" in render(result)

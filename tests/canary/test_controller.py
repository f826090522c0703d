"""The controller against a real ledger with a controllable clock: the canary waits out
``min_duration_s`` and then promotes; every decision keeps the numbers behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.canary.controller import CanaryController
from gateway.canary.events import recent_events
from gateway.canary.metrics import CanaryMetrics
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.store import insert_batch
from gateway.metrics import Metrics
from gateway.runtime import Runtime
from tests.gateway.helpers import factory_with, fakes
from tests.support.ledger_rows import ledger_entry

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = """
version: 1
backends:
  small: {type: fake}
  cand: {type: fake}
tiers:
  - {name: cheap, backends: [small]}
canary:
  name: timed
  candidate: cand
  tier: cheap
  mode: split
  percent: 10
  guardrails: {min_samples: 20, min_duration_s: 3600, max_latency_p95_ratio: 1.2}
  on_pass: promote
"""


def _row(i: int, arm: str, backend: str, latency_ms: float) -> LedgerEntry:
    return ledger_entry(
        f"00000000-0000-7000-8000-{i:012d}",
        ts=T0 + timedelta(seconds=1 + i),
        backend=backend,
        canary_arm=arm,
        fallback_chain=backend,
        completion_tokens=50,
        latency_ms=latency_ms,
        cost_usd=Decimal("0.0001"),
        cost_source="tokens",
    )


async def test_waits_out_min_duration_then_promotes(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = [T0]
    runtime = Runtime(policy, Metrics(), factory=factory_with(fakes("small", "cand")))
    canary = CanaryController(
        runtime,
        CanaryMetrics(CollectorRegistry()),
        engine=engine,
        record=None,
        now=lambda: now[0],
    )
    try:
        await canary.sync()
        rows = [_row(i, "candidate", "cand", 100.0) for i in range(20)]
        rows += [_row(100 + i, "stable", "small", 100.0) for i in range(20)]
        insert_batch(engine, rows)

        now[0] = T0 + timedelta(minutes=30)
        verdict = await canary.evaluate()
        assert verdict is not None
        assert verdict.outcome == "wait"
        assert "1800 s of min_duration_s left" in verdict.reason

        now[0] = T0 + timedelta(hours=1)
        verdict = await canary.evaluate()
        assert verdict is not None
        assert verdict.outcome == "promote"
        events = recent_events(engine, "timed", "cand")
        assert [e.action for e in events] == ["promote", "start"]
        arms = events[0].metrics["arms"]
        assert arms["candidate"]["requests"] == 20
        assert arms["candidate"]["tokens_per_s"] == 500.0  # 50 tokens in 0.1 s
        assert arms["candidate"]["cost_usd"] == 0.002
        assert events[0].metrics["latency_p95_ratio"] == 1.0
        assert events[0].ts == T0 + timedelta(hours=1)
    finally:
        await canary.aclose()
        await runtime.aclose()
        engine.dispose()

"""The controller against a real ledger with a controllable clock: the canary waits out
``min_duration_s`` and then promotes; every decision keeps the numbers behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import structlog.testing
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from gateway.canary.controller import CanaryController
from gateway.canary.counters import CanaryMetrics
from gateway.canary.events import CanaryConflict, recent_events
from gateway.canary.guardrails import Verdict
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.store import insert_batch
from gateway.metrics import Metrics
from gateway.routing.runtime import Runtime
from tests.http.helpers import factory_with, fakes
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
    runtime, canary = _replica(policy, engine, None, now)
    try:
        await canary.sync()
        insert_batch(engine, _arms(candidate_ms=100.0))

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


def _arms(candidate_ms: float) -> list[LedgerEntry]:
    """20 requests on each arm; the stable backend answers in 100 ms."""
    rows = [_row(i, "candidate", "cand", candidate_ms) for i in range(20)]
    return rows + [_row(100 + i, "stable", "small", 100.0) for i in range(20)]


def _replica(
    policy: Path,
    engine: Engine,
    flush: Callable[[], Awaitable[None]] | None,
    clock: list[datetime],
) -> tuple[Runtime, CanaryController]:
    runtime = Runtime(policy, Metrics(), factory=factory_with(fakes("small", "cand")))
    canary = CanaryController(
        runtime,
        CanaryMetrics(CollectorRegistry()),
        engine=engine,
        record=None,
        flush=flush,  # evaluate() and a manual decision flush once they have read the state
        now=lambda: clock[0],
    )
    return runtime, canary


async def test_two_replicas_deciding_at_once_record_one_decision(tmp_path: Path) -> None:
    """Two gateways evaluate the same breach in the same moment (both have read the canary's
    state before either records): one rollback is recorded, the other replica adopts it.
    An operator's promote racing that rollback is refused, and says what was recorded."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engines = [make_engine(url) for _ in range(4)]
    both_read = asyncio.Barrier(2)

    async def after_both_read() -> None:
        await both_read.wait()

    clock = [T0]
    replicas = [_replica(policy, engine, after_both_read, clock) for engine in engines[:2]]
    try:
        with structlog.testing.capture_logs() as logs:
            for _runtime, canary in replicas:
                await canary.sync()  # the first records start, the second adopts it
            insert_batch(engines[3], _arms(candidate_ms=500.0))
            clock[0] = T0 + timedelta(minutes=5)
            verdicts = await asyncio.gather(*(canary.evaluate() for _r, canary in replicas))
        assert [v.outcome for v in verdicts if v is not None] == ["rollback", "rollback"]
        events = recent_events(engines[3], "timed", "cand")
        assert [e.action for e in events] == ["rollback", "start"]
        assert events[0].follows == events[1].id
        for _runtime, canary in replicas:
            assert canary.current is not None
            assert (canary.current.status, canary.current.event_id) == (
                "rolled_back",
                events[0].id,
            )
        decided = [e for e in logs if e["event"] == "canary_decision" and e["action"] != "start"]
        superseded = [e for e in logs if e["event"] == "canary_decision_superseded"]
        assert len(decided) == 1
        assert [(e["wanted"], e["recorded"]) for e in superseded] == [("rollback", "rollback")]
    finally:
        for runtime, canary in replicas:
            await canary.aclose()
            await runtime.aclose()
        for engine in engines:
            engine.dispose()


async def test_a_manual_promote_racing_an_automatic_rollback_is_refused(tmp_path: Path) -> None:
    """The operator's promote read the canary as running, but a replica recorded a rollback
    before the promote was recorded: the promote is refused with what was recorded instead."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engines = [make_engine(url) for _ in range(3)]
    both_read, rolled_back = asyncio.Barrier(2), asyncio.Event()

    async def replica_flush() -> None:
        await both_read.wait()

    async def operator_flush() -> None:
        await both_read.wait()
        await rolled_back.wait()  # the replica records first

    clock = [T0]
    replica = _replica(policy, engines[0], replica_flush, clock)
    operator = _replica(policy, engines[1], operator_flush, clock)

    async def evaluate_then_signal() -> Verdict | None:
        try:
            return await replica[1].evaluate()
        finally:
            rolled_back.set()

    try:
        await replica[1].sync()
        await operator[1].sync()
        insert_batch(engines[2], _arms(candidate_ms=500.0))
        clock[0] = T0 + timedelta(minutes=5)
        verdict, promoted = await asyncio.gather(
            evaluate_then_signal(),
            operator[1].promote("admin", "looks good"),
            return_exceptions=True,
        )
        assert isinstance(verdict, Verdict)
        assert verdict.outcome == "rollback"
        assert isinstance(promoted, CanaryConflict)
        assert "auto recorded rollback at the same moment" in str(promoted)
        assert [e.action for e in recent_events(engines[2], "timed", "cand")] == [
            "rollback",
            "start",
        ]
        assert operator[1].current is not None
        assert operator[1].current.status == "rolled_back"
    finally:
        for runtime, canary in (replica, operator):
            await canary.aclose()
            await runtime.aclose()
        for engine in engines:
            engine.dispose()

"""Canary decisions in the ledger, on SQLite and PostgreSQL: at most one decision follows each
event, so two replicas (or a replica and an operator) deciding in the same moment cannot both
record; the one that loses learns which decision stands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.canary.events import CanaryEvent, Superseded, recent_events, record_event
from gateway.ledger.db import make_engine, upgrade

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _event(action: str, actor: str, follows: str, minutes: int) -> CanaryEvent:
    return CanaryEvent(
        T0 + timedelta(minutes=minutes),
        "c1",
        "cand",
        action,  # type: ignore[arg-type]
        actor,
        f"{action} by {actor}",
        {},
        follows=follows,
    )


def test_the_first_decision_after_an_event_stands(ledger_url: str) -> None:
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        start = record_event(engine, _event("start", "auto", "", 0))
        with pytest.raises(Superseded) as twice:
            record_event(engine, _event("start", "auto", "", 0))  # a second replica starting
        assert twice.value.winner.id == start.id

        rollback = record_event(engine, _event("rollback", "auto", start.id, 10))
        with pytest.raises(Superseded) as lost:
            record_event(engine, _event("promote", "cli", start.id, 10))
        assert lost.value.winner.id == rollback.id
        assert lost.value.winner.action == "rollback"
        assert "auto recorded rollback" in str(lost.value)

        # A decision taken after the rollback is a new step, and is recorded.
        restart = record_event(engine, _event("start", "cli", rollback.id, 20))
        assert [e.id for e in recent_events(engine, "c1", "cand")] == [
            restart.id,
            rollback.id,
            start.id,
        ]
        other = record_event(engine, replace(_event("start", "auto", "", 0), canary="c2"))
        assert other.follows == ""  # each canary has its own chain
    finally:
        engine.dispose()

"""Canary decisions in the ledger database (``canary_events``): the shared, durable state.

Every replica reads the latest event of its canary on start and at every evaluation, so a
decision taken by one replica (or by ``tiergate canary``) reaches the others, and a restart
resumes where the canary stood. Each event names the event it was decided after
(``follows``), unique per canary: when two replicas (or a replica and an operator) decide in the
same moment, the first to record wins and the other is told which decision stands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.ids import request_id
from gateway.ledger.models import CanaryEventRow

Action = Literal["start", "ready", "promote", "rollback", "pause"]
ACTIONS: tuple[Action, ...] = ("start", "ready", "promote", "rollback", "pause")
Status = Literal["running", "ready", "promoted", "rolled_back", "paused"]
STATUS_OF: dict[str, Status] = {
    "start": "running",
    "ready": "ready",
    "promote": "promoted",
    "rollback": "rolled_back",
    "pause": "paused",
}
# What a manual restart (a new ``start``) may follow: the candidate was fixed after these.
RESTARTABLE: tuple[Status, ...] = ("rolled_back", "paused")


@dataclass(frozen=True, slots=True)
class CanaryEvent:
    ts: datetime
    canary: str
    candidate: str
    action: Action
    actor: str
    reason: str
    metrics: dict[str, Any]
    id: str = ""
    follows: str = ""  # the id of the event this decision was taken after

    @property
    def status(self) -> Status:
        return STATUS_OF[self.action]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": _utc(self.ts).isoformat(),
            "canary": self.canary,
            "candidate": self.candidate,
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "metrics": self.metrics,
        }


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Superseded(Exception):
    """Another decision was recorded after the same event first; ``winner`` is the one that
    stands."""

    def __init__(self, winner: CanaryEvent) -> None:
        super().__init__(
            f"canary {winner.canary!r}: {winner.actor} recorded {winner.action} at "
            f"{_utc(winner.ts).isoformat()} first ({winner.reason})"
        )
        self.winner = winner


def record_event(engine: Engine, event: CanaryEvent) -> CanaryEvent:
    """Insert ``event`` (given a fresh time-ordered id); returns it as stored. Raises
    ``Superseded`` when another decision following the same event is already recorded."""
    stored = CanaryEvent(
        ts=_utc(event.ts),
        canary=event.canary,
        candidate=event.candidate,
        action=event.action,
        actor=event.actor,
        reason=event.reason,
        metrics=event.metrics,
        id=event.id or request_id(),
        follows=event.follows,
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(CanaryEventRow).values(
                    id=stored.id,
                    ts=stored.ts,
                    canary=stored.canary,
                    candidate=stored.candidate,
                    action=stored.action,
                    actor=stored.actor,
                    reason=stored.reason[:4000],
                    metrics=json.dumps(stored.metrics, sort_keys=True, default=str),
                    follows=stored.follows,
                )
            )
    except IntegrityError:
        winner = _following(engine, stored.canary, stored.candidate, stored.follows)
        if winner is None or winner.id == stored.id:
            raise
        raise Superseded(winner) from None
    return stored


def _following(engine: Engine, canary: str, candidate: str, follows: str) -> CanaryEvent | None:
    query = select(*CanaryEventRow.__table__.columns).where(
        CanaryEventRow.canary == canary,
        CanaryEventRow.candidate == candidate,
        CanaryEventRow.follows == follows,
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return None if row is None else _event(row)


def recent_events(
    engine: Engine, canary: str, candidate: str, limit: int = 20
) -> list[CanaryEvent]:
    """The canary's events, newest first."""
    query = (
        select(*CanaryEventRow.__table__.columns)
        .where(CanaryEventRow.canary == canary, CanaryEventRow.candidate == candidate)
        .order_by(CanaryEventRow.ts.desc(), CanaryEventRow.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_event(row) for row in rows]


def latest_event(engine: Engine, canary: str, candidate: str) -> CanaryEvent | None:
    found = recent_events(engine, canary, candidate, limit=1)
    return found[0] if found else None


def started_at(engine: Engine, canary: str, candidate: str) -> datetime | None:
    """When the canary's current run started (its latest ``start`` event)."""
    query = (
        select(CanaryEventRow.ts)
        .where(
            CanaryEventRow.canary == canary,
            CanaryEventRow.candidate == candidate,
            CanaryEventRow.action == "start",
        )
        .order_by(CanaryEventRow.ts.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        found = connection.execute(query).scalar_one_or_none()
    return None if found is None else _utc(found)


def _event(row: Any) -> CanaryEvent:
    action = row.action if row.action in STATUS_OF else "pause"
    return CanaryEvent(
        ts=_utc(row.ts),
        canary=row.canary,
        candidate=row.candidate,
        action=action,  # type: ignore[arg-type]
        actor=row.actor,
        reason=row.reason,
        metrics=json.loads(row.metrics or "{}"),
        id=row.id,
        follows=row.follows,
    )


class CanaryConflict(Exception):
    """A manual decision that does not apply to the canary's state (the message says why)."""


def stood(wanted: Action, event: CanaryEvent) -> CanaryEvent:
    """``event`` if it is the decision asked for; a conflict if another one was recorded first."""
    if event.action != wanted:
        raise CanaryConflict(
            f"canary {event.canary!r}: {event.actor} recorded {event.action} at the same moment "
            f"({event.reason}); nothing was changed: check `tiergate canary status` and decide "
            f"again"
        )
    return event

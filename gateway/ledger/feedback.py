"""Feedback rows: quality signals about answered requests (``POST /v1/feedback``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from gateway.ledger.adaptive import label_from_feedback
from gateway.ledger.models import FeedbackRow, RequestRow


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    request_id: str
    ts: datetime
    key_id: str
    score: float
    comment: str | None


def request_owner(engine: Engine, request_id: str) -> str | None:
    """The key id of the ledger row ``request_id``, or None when there is no such row."""
    with engine.connect() as connection:
        found = connection.execute(
            select(RequestRow.key_id).where(RequestRow.id == request_id)
        ).scalar_one_or_none()
    return None if found is None else str(found)


def insert_feedback(engine: Engine, feedback: Feedback) -> None:
    """Keep ``feedback``; when the adaptive scorer sampled the rated request (a cheaper tier
    answered it), the feedback also becomes a label for its embedding, in one transaction."""
    with engine.begin() as connection:
        connection.execute(
            insert(FeedbackRow).values(
                id=feedback.id,
                request_id=feedback.request_id,
                ts=feedback.ts,
                key_id=feedback.key_id,
                score=feedback.score,
                comment=feedback.comment,
            )
        )
        label_from_feedback(connection, feedback.request_id, feedback.ts, feedback.score)

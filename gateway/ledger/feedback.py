"""Feedback rows: quality signals about answered requests (``POST /v1/feedback``).

One verdict per request and key: a key that rates a request again replaces its earlier verdict
(the report, the canary's ``min_quality`` and the calibration count it once), and a request has
at most one feedback label, its latest verdict's (``gateway.ledger.adaptive``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select

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


def insert_feedback(engine: Engine, feedback: Feedback) -> bool:
    """Keep ``feedback`` in place of the key's earlier verdict on the same request, if any
    (returns whether there was one); when the adaptive scorer sampled the rated request (a
    cheaper tier answered it), the feedback also becomes the request's label, replacing its
    earlier one. One transaction."""
    with engine.begin() as connection:
        # Two verdicts of one request at once wait for each other here (PostgreSQL; SQLite
        # writes one transaction at a time anyway), so neither misses the other's row.
        connection.execute(
            select(RequestRow.id).where(RequestRow.id == feedback.request_id).with_for_update()
        )
        replaced = connection.execute(
            delete(FeedbackRow).where(
                FeedbackRow.request_id == feedback.request_id,
                FeedbackRow.key_id == feedback.key_id,
            )
        ).rowcount
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
    return bool(replaced)

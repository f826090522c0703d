"""The quality figures the savings report shows next to the money: the ``/v1/feedback`` scores
and the adaptive scorer's judge grades (0 wrong .. 1 as good as the stronger tier's answer),
each with the request it rates, so the report can count it in that request's group."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, inspect, select

from gateway.ledger.adaptive import JUDGE
from gateway.ledger.models import AdaptiveLabelRow, FeedbackRow, RequestRow


def feedback_scores(
    connection: Connection, columns: Sequence[Any], where: Sequence[Any]
) -> Iterator[tuple[Any, float]]:
    """Each feedback score (0..1) with its request's ``columns``, for requests ``where``."""
    query = select(*columns, FeedbackRow.score).join(
        FeedbackRow, FeedbackRow.request_id == RequestRow.id
    )
    for row in connection.execute(query.where(*where)):
        yield row, float(row.score)


def judge_grades(
    connection: Connection, columns: Sequence[Any], where: Sequence[Any]
) -> Iterator[tuple[Any, float]]:
    """Each judge grade (0..1: how good the cheaper tier's answer was next to the stronger
    tier's; the stored label is 1 - grade) with its request's ``columns``."""
    if not inspect(connection).has_table(AdaptiveLabelRow.__tablename__):
        return
    query = (
        select(*columns, AdaptiveLabelRow.label)
        .join(AdaptiveLabelRow, AdaptiveLabelRow.request_id == RequestRow.id)
        .where(AdaptiveLabelRow.source == JUDGE)
    )
    for row in connection.execute(query.where(*where)):
        yield row, 1.0 - float(row.label)

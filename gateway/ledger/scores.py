"""The ledger's complexity scores: what calibration reads (``tiergate calibrate --from-ledger``,
``--target-quality``): the scores of recent requests, and the feedback on the rated ones."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select

from gateway.ledger.models import FeedbackRow, RequestRow


def recent_scores(engine: Engine, since: datetime, route: str | None) -> list[float]:
    """The complexity score of every scored request since ``since`` (of ``route``, if given)."""
    query = select(RequestRow.score).where(RequestRow.ts >= since, RequestRow.score.is_not(None))
    if route is not None:
        query = query.where(RequestRow.route == route)
    with engine.connect() as connection:
        return [float(s) for (s,) in connection.execute(query) if s is not None]


def rated_scores(
    engine: Engine, since: datetime, route: str | None, tiers: set[str]
) -> list[tuple[float, float]]:
    """(complexity score, mean feedback) of the window's rated requests answered by ``tiers``."""
    query = (
        select(RequestRow.score, func.avg(FeedbackRow.score))
        .join(FeedbackRow, FeedbackRow.request_id == RequestRow.id)
        .where(
            RequestRow.ts >= since,
            RequestRow.score.is_not(None),
            RequestRow.tier.in_(sorted(tiers)),
            RequestRow.status == 200,
        )
        .group_by(RequestRow.id, RequestRow.score)
    )
    if route is not None:
        query = query.where(RequestRow.route == route)
    with engine.connect() as connection:
        return [
            (float(s), float(f))
            for s, f in connection.execute(query)
            if s is not None and f is not None
        ]

"""The canary's figures per arm, read from the ledger: the numbers behind every verdict and
the canary report.

Arms: ``stable`` (requests of the tier on the stable backend that took part: in split mode the
keys outside the candidate's share, in shadow mode the requests that were mirrored),
``candidate`` (split: keys assigned to the candidate) and ``shadow`` (the shadow calls).

* errors: rows answered with an error status; on the candidate's arms also rows the candidate
  did not answer itself (it failed or was skipped and a stable backend took over). Requests the
  client abandoned (499) are neither samples nor errors.
* latency percentiles (nearest rank) over answered rows, on the candidate's arms only those the
  candidate answered; tokens/s = completion tokens / their wall time.
* quality: the mean of the shadow comparisons (0-1) and of ``/v1/feedback`` scores on the arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from gateway.ledger.models import FeedbackRow, RequestRow
from gateway.ledger.percentiles import nearest_rank

ARMS: tuple[str, ...] = ("stable", "candidate", "shadow")


@dataclass(slots=True)
class _Acc:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    busy_s: float = 0.0
    cost: Decimal = Decimal(0)
    quality: list[float] = field(default_factory=list)
    feedback: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ArmFigures:
    arm: str
    requests: int
    errors: int
    error_rate: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    tokens_per_s: float | None
    cost_usd: float
    quality: float | None
    quality_samples: int
    feedback: float | None
    feedback_count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p95": self.latency_ms_p95,
            "tokens_per_s": self.tokens_per_s,
            "cost_usd": self.cost_usd,
            "quality": self.quality,
            "quality_samples": self.quality_samples,
            "feedback": self.feedback,
            "feedback_count": self.feedback_count,
        }


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def arm_figures(engine: Engine, *, since: datetime, candidate: str) -> dict[str, ArmFigures]:
    """Figures per arm for the rows since ``since`` (every arm, even when empty)."""
    since = _utc(since)
    accs = {arm: _Acc() for arm in ARMS}
    rows_query = select(
        RequestRow.canary_arm,
        RequestRow.backend,
        RequestRow.status,
        RequestRow.latency_ms,
        RequestRow.completion_tokens,
        RequestRow.cost_usd,
        RequestRow.quality,
    ).where(
        RequestRow.ts >= since,
        RequestRow.canary_arm.in_(ARMS),
        RequestRow.cache != "hit",
    )
    feedback_query = (
        select(RequestRow.canary_arm, FeedbackRow.score)
        .join(RequestRow, RequestRow.id == FeedbackRow.request_id)
        .where(RequestRow.ts >= since, RequestRow.canary_arm.in_(ARMS))
    )
    with engine.connect() as connection:
        for row in connection.execute(rows_query):
            _add(accs[str(row.canary_arm)], row, candidate)
        for arm, score in connection.execute(feedback_query):
            accs[str(arm)].feedback.append(float(score))
    return {arm: _figures(arm, acc) for arm, acc in accs.items()}


def _add(acc: _Acc, row: Any, candidate: str) -> None:
    if row.status == 499:
        return
    acc.requests += 1
    own = row.canary_arm == "stable" or row.backend == candidate
    if row.status != 200 or not own:
        acc.errors += 1
    elif own:
        acc.latencies.append(float(row.latency_ms))
        acc.completion_tokens += int(row.completion_tokens)
        acc.busy_s += float(row.latency_ms) / 1000.0
    if row.cost_usd is not None:
        acc.cost += Decimal(row.cost_usd)
    if row.quality is not None:
        acc.quality.append(float(row.quality))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _figures(arm: str, acc: _Acc) -> ArmFigures:
    signals = [*acc.quality, *acc.feedback]
    p50, p95 = nearest_rank(acc.latencies, 50), nearest_rank(acc.latencies, 95)
    return ArmFigures(
        arm=arm,
        requests=acc.requests,
        errors=acc.errors,
        error_rate=round(acc.errors / acc.requests, 4) if acc.requests else None,
        latency_ms_p50=None if p50 is None else round(p50, 3),
        latency_ms_p95=None if p95 is None else round(p95, 3),
        tokens_per_s=round(acc.completion_tokens / acc.busy_s, 2) if acc.busy_s > 0 else None,
        cost_usd=float(round(acc.cost, 8)),
        quality=_mean(signals),
        quality_samples=len(signals),
        feedback=_mean(acc.feedback),
        feedback_count=len(acc.feedback),
    )

"""Reading the savings report's rollups (migration 0014): ``ledger_rollup_hourly``, the ledger's
rows summed per UTC hour and per everything a report figure depends on, and
``ledger_latency_daily``, the answered requests' latency histograms per UTC day.

Triggers on ``ledger_requests`` keep both in each insert's and delete's transaction (and empty
them on a PostgreSQL TRUNCATE), so they agree with the rows (no code updates a row; an UPDATE by
hand is not followed); the report reads whole hours (and, for latencies, whole days) here and the
window's partial edges from the rows (``gateway.ledger.report_window``). The rollups hold no key
id (a key is one of many per team: per hour they would be nearly as many as the rows), so a
report ``by=key`` reads the rows. Nullable columns are kept as '' (the report's groups show
None and '' alike, as "-").
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, literal_column, select, text

from gateway.ledger.adaptive import LABEL_ARMS, OVERHEAD_ARMS
from gateway.ledger.models import LatencyBinRow, RollupRow
from gateway.ledger.report_scan import PICO, Bucket, bucket_of

TRIGGER = "ledger_rollup_insert"
# Groupings the rollups can answer (``day`` from the hour), by their column.
_COLUMNS: dict[str, str] = {
    "tier": "tier",
    "route": "route",
    "backend": "backend",
    "team": "team",
    "model": "model",
    "cost_source": "cost_source",
    "capability": "capabilities",
    "canary_arm": "canary_arm",
    "api": "api",
}


def can_group(bys: tuple[str, ...]) -> bool:
    return all(by == "day" or by in _COLUMNS for by in bys)


def ready(connection: Connection) -> bool:
    """Whether the trigger that keeps the rollups is there (a schema made by migrations from
    0014 on; not one made by ``create_all``, which has the tables and no trigger)."""
    if connection.dialect.name == "sqlite":
        query = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"
    else:
        query = "SELECT 1 FROM pg_trigger WHERE tgname = :name"
    return connection.execute(text(query), {"name": TRIGGER}).first() is not None


def buckets(
    connection: Connection, bys: tuple[str, ...], hours: tuple[str, str], team: str | None
) -> Iterator[Bucket]:
    """The rows of the whole hours ``hours`` (``[first, end)``, "YYYY-MM-DD HH"), as
    ``report_scan.buckets`` sums them from the rows."""
    r = RollupRow
    grouped = [_group(r, by, "hour", 10) for by in bys]
    dims: list[Any] = [
        *grouped,
        func.nullif(r.canary_arm, ""),  # kept as '' (a key has no NULL)
        r.status,
        r.fallback_chain,
        r.escalated,
        r.hit,
        r.cost_known,
        r.baseline_known,
        r.usage_estimated,
    ]
    sums = (
        func.sum(r.requests),
        func.sum(r.prompt_tokens),
        func.sum(r.completion_tokens),
        func.sum(r.cached_tokens),
        func.sum(r.cost_pico),
        func.sum(r.baseline_pico),
    )
    where = _where(r.hour, hours, r.team, team)
    for found in connection.execute(select(*dims, *sums).where(*where).group_by(*dims)):
        yield bucket_of(found, len(bys), _usd)


def latency_bins(
    connection: Connection, bys: tuple[str, ...], days: tuple[str, str], team: str | None
) -> Iterator[tuple[tuple[Any, ...], str, int, int]]:
    """``(group values, metric, bin, requests)`` of the answered client requests of the whole
    days ``days`` (``[first, end)``, "YYYY-MM-DD"); metric: latency | ttft."""
    r = LatencyBinRow
    grouped = [_group(r, by, "day", 10) for by in bys]
    query = (
        select(*grouped, r.metric, r.bin, func.sum(r.requests))
        .where(*_where(r.day, days, r.team, team), r.canary_arm.not_in(OVERHEAD_ARMS))
        .group_by(*grouped, r.metric, r.bin)
    )
    for row in connection.execute(query):
        yield tuple(row[: len(bys)]), str(row[-3]), int(row[-2]), int(row[-1])


def baseline_models(
    connection: Connection, hours: tuple[str, str], team: str | None
) -> Iterator[tuple[str | None, int]]:
    """``(baseline model, requests)`` as ``report_scan.baseline_models`` counts them."""
    r = RollupRow
    query = (
        select(r.baseline_model, func.sum(r.requests))
        .where(
            *_where(r.hour, hours, r.team, team),
            r.canary_arm.not_in(OVERHEAD_ARMS),
            r.cost_known.is_(True),
            r.baseline_known.is_(True),
        )
        .group_by(r.baseline_model)
    )
    for model, n in connection.execute(query):
        yield _none(model), int(n)


def labelling(
    connection: Connection, hours: tuple[str, str], team: str | None
) -> tuple[int, Decimal]:
    """The adaptive scorer's judged samples: how many calls, at what cost."""
    r = RollupRow
    query = select(func.sum(r.requests), func.sum(r.cost_pico)).where(
        *_where(r.hour, hours, r.team, team), r.canary_arm.in_(LABEL_ARMS)
    )
    calls, cost = connection.execute(query).one()
    return int(calls or 0), _usd(cost)


def teams(connection: Connection, first_hour: str | None) -> set[str]:
    """The teams with rows in the hours from ``first_hour`` on (None: in any hour)."""
    query = select(RollupRow.team).where(RollupRow.team != "").distinct()
    if first_hour is not None:
        query = query.where(RollupRow.hour >= first_hour)
    return {str(team) for team in connection.execute(query).scalars()}


def _group(table: Any, by: str, time_column: str, day_chars: int) -> Any:
    if by == "day":
        column = getattr(table, time_column)
        return func.substr(column, literal_column("1"), literal_column(str(day_chars)))
    return getattr(table, _COLUMNS[by])


def _where(column: Any, span: tuple[str, str], team_column: Any, team: str | None) -> list[Any]:
    where = [column >= span[0], column < span[1]]
    if team is not None:
        where.append(team_column == team)
    return where


def _none(value: Any) -> Any:
    return None if value == "" else value


def _usd(pico: Any) -> Decimal:
    return Decimal(int(pico or 0)).scaleb(-PICO)

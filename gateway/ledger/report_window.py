"""Where a savings report's window is read from: its whole UTC hours from the hourly rollup, its
whole UTC days' latencies from the daily histograms (``gateway.ledger.rollup``), and its
partial edges, before the first whole hour (day) and after the last, from the ledger's rows
(``gateway.ledger.report_scan``). Without the rollups (a schema made without migration 0014's
trigger) or for a report ``by=key``, the whole window is read from the rows.

The money, counts and rates are the same either way (the rollup's sums are the rows' sums, to
the 1e-12 USD). Latency percentiles are exact (every answered request's value, from the rows)
while the window holds at most ``EXACT_LIMIT`` answered requests; past that, they come from
the histograms, within ``percentiles.MAX_RELATIVE_ERROR`` of the exact values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from gateway.ledger import report_scan, rollup
from gateway.ledger.adaptive import LABEL_ARMS
from gateway.ledger.models import RequestRow

EXACT_LIMIT = 20_000  # answered requests read one by one: ~0.1 s on SQLite
CHUNK = 5000

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Window:
    """A report's ``[since, until)`` (UTC), optionally one team's, and how it is read."""

    since: datetime
    until: datetime
    team: str | None
    bys: tuple[str, ...]  # the groupings (none: the totals only)
    rolled: bool  # whole hours and days from the rollups

    @classmethod
    def plan(
        cls,
        connection: Connection,
        bys: tuple[str, ...],
        since: datetime,
        until: datetime,
        team: str | None,
    ) -> Window:
        rolled = rollup.can_group(bys) and rollup.ready(connection)
        return cls(since, until, team, bys, rolled)

    def _raw(self, span: Span) -> tuple[Any, ...]:
        where: tuple[Any, ...] = (RequestRow.ts >= span[0], RequestRow.ts < span[1])
        return where if self.team is None else (*where, RequestRow.team == self.team)

    def _split(self, step: timedelta) -> tuple[tuple[datetime, datetime] | None, list[Span]]:
        """The whole ``step``s (hours or days) inside the window, and the raw spans around."""
        try:
            first, end = _ceil(self.since, step), _floor(self.until, step)
        except OverflowError:  # a window at the end of time: read its rows
            first = end = self.until
        if not self.rolled or first >= end:
            return None, [(self.since, self.until)]
        edges = [(self.since, first), (end, self.until)]
        return (first, end), [(a, b) for a, b in edges if a < b]

    def buckets(self, connection: Connection) -> Iterator[report_scan.Bucket]:
        whole, raw = self._split(timedelta(hours=1))
        if whole is not None:
            yield from rollup.buckets(connection, self.bys, _hours(whole), self.team)
        for span in raw:
            yield from report_scan.buckets(connection, self.bys, self._raw(span))

    def answered(
        self, connection: Connection
    ) -> Iterator[tuple[tuple[Any, ...], float, float | None]]:
        """Each answered client request's (group, latency, ttft), from the rows."""
        where = self._raw((self.since, self.until))
        return report_scan.answered(connection, self.bys, where, CHUNK)

    def latency_bins(
        self, connection: Connection
    ) -> Iterator[tuple[tuple[Any, ...], str, int, int]]:
        """``(group, metric, bin, requests)``: the histograms of the whole days, and the edges'
        rows binned by the database."""
        whole, raw = self._split(timedelta(days=1))
        if whole is not None:
            days = (whole[0].date().isoformat(), whole[1].date().isoformat())
            yield from rollup.latency_bins(connection, self.bys, days, self.team)
        for span in raw:
            for metric in ("latency", "ttft"):
                yield from report_scan.binned(connection, self.bys, self._raw(span), metric)

    def baseline_models(self, connection: Connection) -> list[dict[str, Any]]:
        """As ``report_scan.baseline_models``: each baseline model and its requests."""
        whole, raw = self._split(timedelta(hours=1))
        counts: dict[str | None, int] = {}
        if whole is not None:
            for model, n in rollup.baseline_models(connection, _hours(whole), self.team):
                counts[model] = counts.get(model, 0) + n
        for span in raw:
            for found in report_scan.baseline_models(connection, self._raw(span)):
                counts[found["model"]] = counts.get(found["model"], 0) + found["requests"]
        ordered = sorted(
            counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or "")
        )
        return [{"model": model, "requests": n} for model, n in ordered]

    def labelling(self, connection: Connection) -> tuple[int, Decimal]:
        """The adaptive scorer's judged samples in the window: calls and their cost."""
        whole, raw = self._split(timedelta(hours=1))
        calls, cost = 0, Decimal(0)
        if whole is not None:
            calls, cost = rollup.labelling(connection, _hours(whole), self.team)
        for span in raw:
            where = (*self._raw(span), RequestRow.canary_arm.in_(LABEL_ARMS))
            calls += connection.execute(select(func.count()).where(*where)).scalar_one()
            cost += report_scan.money_sum(connection, RequestRow.cost_usd, where)
        return calls, cost


def teams_since(connection: Connection, since: datetime) -> set[str]:
    """The teams with requests in the ledger from ``since`` (UTC) on: from the rollup's whole
    hours and the rows of the hour before them (every row without the rollups)."""
    query = select(RequestRow.team).where(RequestRow.team.is_not(None)).distinct()
    if not rollup.ready(connection):
        return {str(t) for t in connection.execute(query.where(RequestRow.ts >= since)).scalars()}
    try:
        first = _ceil(since, timedelta(hours=1))
    except OverflowError:
        first = since
    raw = query.where(RequestRow.ts >= since, RequestRow.ts < first)
    found = {str(team) for team in connection.execute(raw).scalars()}
    return found | rollup.teams(connection, _hours((first, first))[0])


def _floor(moment: datetime, step: timedelta) -> datetime:
    if step == timedelta(days=1):
        return datetime.combine(moment.date(), time(), tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


def _hours(span: tuple[datetime, datetime]) -> tuple[str, str]:
    """As the rollup keeps hours: "YYYY-MM-DD HH" (isoformat pads the year to 4 digits)."""
    return span[0].isoformat(" ")[:13], span[1].isoformat(" ")[:13]

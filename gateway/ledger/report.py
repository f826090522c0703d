"""The cost-savings report: what routing saved, at what latency and reliability, from the ledger.

One function computes it (``build_report``); the CLI prints it as a table, JSON or CSV, the
admin API returns the JSON, and the dashboard draws it, so the three always agree.

This module reads the ledger: the requests between two times (``parse_since``), optionally of
one team, grouped by one of ``GROUPINGS``, with their feedback scores and judge grades
(``report_quality``); what each figure of a group means, and how it is counted, is
``report_figures``. ``labelling`` repeats the part of routing's overhead that the adaptive
scorer's judged samples cost. ``known_teams`` and ``ledger_teams`` list the teams a report can
be about.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, func, inspect, select

from gateway.ledger import rollup
from gateway.ledger.models import RequestRow, TeamRow
from gateway.ledger.percentiles import MAX_RELATIVE_ERROR
from gateway.ledger.report_figures import Tally, usd
from gateway.ledger.report_quality import feedback_scores, judge_grades
from gateway.ledger.report_scan import client_rows
from gateway.ledger.report_window import EXACT_LIMIT, Window, teams_since

GroupBy = Literal["tier", "route", "backend", "day", "key", "team", "model", "cost_source"]
GROUPINGS: tuple[str, ...] = (
    "tier",
    "route",
    "backend",
    "day",
    "key",
    "team",
    "model",
    "cost_source",
    "capability",
    "canary_arm",
    "api",
)
# What the money figures are in, and what the baseline stands for: said in every report, so a
# figure read on its own is not taken for another currency or for a measured counterfactual.
CURRENCY = "USD"
BASELINE_BASIS = (
    "each request's own prompt and completion tokens at the baseline model's prices "
    "(pricing.baseline) when it was made; the baseline model's answer is never made, so its "
    "length is unknown and the routed answer's stands for it"
)
# A request that needed nothing special, in a report by capability.
PLAIN = "plain"

_COLUMNS = (
    RequestRow.ts,
    RequestRow.canary_arm,
    RequestRow.api,
    RequestRow.capabilities,
    RequestRow.key_id,
    RequestRow.team,
    RequestRow.route,
    RequestRow.tier,
    RequestRow.backend,
    RequestRow.model,
    RequestRow.cost_source,
    RequestRow.status,
    RequestRow.attempts,
    RequestRow.fallback_chain,
    RequestRow.cache,
    RequestRow.prompt_tokens,
    RequestRow.completion_tokens,
    RequestRow.cached_tokens,
    RequestRow.usage_estimated,
    RequestRow.latency_ms,
    RequestRow.ttft_ms,
    RequestRow.cost_usd,
    RequestRow.baseline_cost_usd,
)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m`` (before now), or an ISO date/time."""
    now = now or datetime.now(UTC)
    match = re.fullmatch(r"(\d+)\s*([dhm])", text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
                unit, timedelta(minutes=amount)
            )
            return now - delta
        except OverflowError:
            raise ValueError(
                f"{text.strip()!r} reaches back before the year 1: use a shorter span, or an "
                f"ISO date like 2026-11-01"
            ) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use 7d, 12h, 30m or an ISO date like 2026-11-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _keys(row: Any, by: str | None) -> list[str]:
    """The groups a row counts in: one, except by capability, where a request that needed
    several capabilities counts in each."""
    if by == "capability":
        return [c for c in (row.capabilities or "").split(",") if c] or [PLAIN]
    return [_key(row, by)]


def _group_keys(value: Any, by: str | None) -> list[str]:
    """The groups a bucket (``report_scan``) counts in, from its grouping's value: as
    ``_keys`` for a row."""
    match by:
        case None:
            return ["all"]
        case "capability":
            return [c for c in (value or "").split(",") if c] or [PLAIN]
        case "day":
            return [str(value)[:10]]
        case "canary_arm" | "team" | "api":
            return [str(value or "-")]
        case _:
            return [str(value)]


def _key(row: Any, by: str | None) -> str:
    match by:
        case None:
            return "all"
        case "day":
            ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
            return str(ts.astimezone(UTC).date())
        case "key":
            return str(row.key_id)
        case "canary_arm":
            return str(row.canary_arm or "-")
        case "team":
            return str(row.team or "-")
        case "api":
            return str(row.api or "-")
        case _:
            return str(getattr(row, by))


def _utc(moment: datetime) -> datetime:
    """A naive time is taken as UTC; an aware one is converted to it."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def build_report(
    engine: Engine,
    *,
    since: datetime,
    until: datetime | None = None,
    by: str | None = None,
    team: str | None = None,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> dict[str, Any]:
    """Aggregate the ledger between ``since`` and ``until`` (default: now), grouped ``by``;
    with ``team``, only that team's requests (its virtual keys' traffic)."""
    found = build_reports(engine, since=since, until=until, bys=(by,), team=team, progress=progress)
    return found[0]


def build_reports(
    engine: Engine,
    *,
    since: datetime,
    until: datetime | None = None,
    bys: Sequence[str | None],
    team: str | None = None,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> list[dict[str, Any]]:
    """``build_report`` for each grouping of ``bys`` over the same window, from one read of
    the ledger (the dashboard's three)."""
    for by in bys:
        if by is not None and by not in GROUPINGS:
            raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    names = tuple(dict.fromkeys(by for by in bys if by is not None))
    # In UTC: SQLite keeps the times as naive UTC text and compares the bounds as text too, so
    # a bound with another offset (``--since 2026-11-20T09:00+02:00``) would be hours off there.
    since, until = _utc(since), _utc(until or datetime.now(UTC))
    # For the feedback and judge grades, joined to the requests they rate: the conditions on
    # the request wrapped (``_opaque``) so that SQLite reads the few ratings and looks up their
    # requests, rather than every request of the window by its time index (0.6 s at 1M rows).
    span: tuple[Any, ...] = (_opaque(RequestRow.ts) >= since, _opaque(RequestRow.ts) < until)
    if team is not None:
        span = (*span, _opaque(RequestRow.team) == team)
    total = Tally()
    groups: dict[str, dict[str, Tally]] = {name: {} for name in names}

    known: dict[tuple[Any, ...], list[Tally]] = {}

    def tallies(values: tuple[Any, ...]) -> list[Tally]:
        """The tallies a row or bucket of these group values counts in (looked up once per
        values: a month's histograms are tens of thousands of rows over a few hundred)."""
        found = known.get(values)
        if found is None:
            found = known[values] = [total]
            for name, value in zip(names, values, strict=True):
                for key in _group_keys(value, name):
                    found.append(groups[name].setdefault(key, Tally()))
        return found

    with engine.connect() as connection:
        window = Window.plan(connection, names, since, until, team)
        found = list(window.buckets(connection))
        total_rows = sum(bucket.n for bucket in found)
        progress(0, total_rows)
        for bucket in found:
            for tally in tallies(bucket.group):
                tally.add(bucket)
        exact = total.requests - total.errors - total.abandoned <= EXACT_LIMIT or not window.rolled
        if exact:
            for group, latency, ttft in window.answered(connection):
                for tally in tallies(group):
                    tally.answered(latency, ttft)
        else:
            for group, metric, bin_, n in window.latency_bins(connection):
                for tally in tallies(group):
                    tally.binned(metric, bin_, n)
        progress(total_rows, total_rows)
        _add_quality(connection, (*span, client_rows()), total, groups)
        labelling_calls, labelling_cost = window.labelling(connection)
        baselines = window.baseline_models(connection)
    baselined = total.compared > 0
    return [
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": by,
            "team": team,
            "currency": CURRENCY,
            "baseline_basis": BASELINE_BASIS if baselined else None,
            "baselines": baselines,
            "totals": total.figures(baselined),
            "groups": [
                {"key": key, **tally.figures(baselined)}
                for key, tally in sorted(groups[by].items())
            ]
            if by is not None
            else [],
            "labelling": {"calls": int(labelling_calls), "cost_usd": usd(labelling_cost)},
            # Latency percentiles: nearest-rank, exact, or within this share of the exact value.
            "percentiles": {
                "method": "nearest-rank",
                "max_relative_error": 0.0 if exact else MAX_RELATIVE_ERROR,
            },
        }
        for by in bys
    ]


def _opaque(column: Any) -> Any:
    """``column``, as an expression no index answers (``coalesce(c, c)``)."""
    return func.coalesce(column, column)


def _add_quality(
    connection: Any, where: tuple[Any, ...], total: Tally, groups: dict[str, dict[str, Tally]]
) -> None:
    """``/v1/feedback`` scores and judge grades, counted with the group of the request they
    rate (in each grouping of ``groups``)."""

    def tallies(row: Any) -> Iterator[Tally]:
        yield total
        for name, tallied in groups.items():
            for key in _keys(row, name):
                yield tallied.setdefault(key, Tally())

    for row, score in feedback_scores(connection, _COLUMNS, where):
        for tally in tallies(row):
            tally.feedback_sum += score
            tally.feedback_count += 1
    for row, grade in judge_grades(connection, _COLUMNS, where):
        for tally in tallies(row):
            tally.judge_sum += grade
            tally.judge_count += 1


def ledger_teams(engine: Engine, since: datetime) -> list[str]:
    """The teams with requests in the ledger since ``since`` (for the dashboard's selector)."""
    with engine.connect() as connection:
        return sorted(teams_since(connection, _utc(since)))


def known_teams(engine: Engine) -> list[str]:
    """Every team a report can be about: those made (``tiergate keys team``) and those found in
    the ledger's requests."""
    with engine.connect() as connection:
        if rollup.ready(connection):  # every row's team, in far fewer rows
            teams = rollup.teams(connection, None)
        else:
            query = select(RequestRow.team).where(RequestRow.team.is_not(None)).distinct()
            teams = {str(team) for team in connection.execute(query).scalars()}
        if inspect(connection).has_table(TeamRow.__tablename__):
            teams.update(str(team) for team in connection.execute(select(TeamRow.id)).scalars())
    return sorted(teams)


# A row with a baseline cost but no model: written before migration 0013, or a failed request
# (booked at a $0 baseline) under a policy without a baseline.
UNRECORDED = "not recorded (rows from before revision 0013, or failed with no baseline)"


def baselines_line(baselines: Iterable[dict[str, Any]]) -> str:
    """The report's ``baselines`` in words: each model with how many requests it priced."""
    return "; ".join(
        f"{b['model'] or UNRECORDED} "
        f"({b['requests']} {'request' if b['requests'] == 1 else 'requests'})"
        for b in baselines
    )


def rows_for_output(report: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The groups (or the totals alone) plus a total line, for tables and CSV."""
    yield from report["groups"]
    yield {"key": "total", **report["totals"]}


def csv_rows(report: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """``rows_for_output`` with what the report says of its whole window on every line
    (``report_figures.REPORT_FIELDS``): a CSV has no other place for it."""
    window = {
        "currency": report["currency"],
        "baselines": baselines_line(report["baselines"]),
        "baseline_basis": report["baseline_basis"] or "",
    }
    for row in rows_for_output(report):
        yield {**row, **window}

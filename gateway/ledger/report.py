"""The cost-savings report: what routing saved, at what latency and reliability, from the ledger.

One function computes it (``build_report``); the CLI prints it as a table, JSON or CSV, the
admin API returns the JSON, and the dashboard draws it, so the three always agree.

Definitions (per group and in total):

* cost = the sum over rows whose cost is known, the gateway's own background calls included
  (``overhead``, below); rows whose cost is unknown (an unpriced backend) are counted in
  ``unpriced`` and left out of the money columns rather than counted as $0; baseline is over the
  client rows whose cost and baseline are both known (``compared``); savings = baseline - cost
  of those rows - overhead, and savings % = savings / baseline; both ``None`` when no row of
  the report has a baseline (a policy without one);
* cost per 1M tokens = cost (overhead included) / (prompt + completion tokens of the priced
  client rows) x 1,000,000;
* latency and time-to-first-token percentiles use the nearest-rank method over answered (200)
  requests: p-th percentile = the ceil(p/100 x n)-th smallest value;
* feedback (``/v1/feedback`` scores) and judge (the adaptive scorer's judge grades of cheaper
  answers against the stronger tier's, 0..1): the mean and how many, per group of the request
  rated, so a small sample shows as small;
* fallback rate = requests that needed more than one attempt / requests; error rate = requests
  answered with an error status / requests; abandoned rate = requests the client left before the
  end (status 499) / requests; cache hit rate = requests served from the cache / requests.

The gateway's own background calls (rows whose ``canary_arm`` is in ``OVERHEAD_ARMS``: a
canary's shadow and judge calls, the adaptive scorer's judged samples) are not client traffic:
they are left out of the request counts, tokens, latencies and rates, and their cost is routing's
``overhead`` (with ``overhead_calls``): part of cost, and taken off the savings, since without
routing they would not have been spent. ``labelling`` repeats the judged samples' part of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Engine, func, inspect, or_, select

from gateway.ledger.adaptive import LABEL_ARMS, OVERHEAD_ARMS
from gateway.ledger.models import RequestRow, TeamRow
from gateway.ledger.report_quality import feedback_scores, judge_grades

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
# A request that needed nothing special, in a report by capability.
PLAIN = "plain"
CHUNK = 5000

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


def nearest_rank(values: list[float], percentile: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Acc:
    requests: int = 0
    priced: int = 0  # cost known
    compared: int = 0  # cost and baseline known
    unpriced: int = 0
    estimated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    priced_tokens: int = 0
    cost: Decimal = Decimal(0)
    compared_cost: Decimal = Decimal(0)
    baseline: Decimal = Decimal(0)
    errors: int = 0
    abandoned: int = 0
    fallbacks: int = 0
    cache_hits: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    feedback_sum: float = 0.0
    feedback_count: int = 0
    judge_sum: float = 0.0
    judge_count: int = 0
    overhead_calls: int = 0
    overhead: Decimal = Decimal(0)

    def add(self, row: Any) -> None:
        if row.canary_arm in OVERHEAD_ARMS:
            self._add_overhead(row)
            return
        self.requests += 1
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens
        self.estimated += bool(row.usage_estimated)
        if row.cost_usd is not None:
            cost = Decimal(row.cost_usd)
            self.priced += 1
            self.cost += cost
            self.priced_tokens += row.prompt_tokens + row.completion_tokens
            if row.baseline_cost_usd is not None:
                self.compared += 1
                self.compared_cost += cost
                self.baseline += Decimal(row.baseline_cost_usd)
        else:
            self.unpriced += 1
        if row.status == 499:
            self.abandoned += 1  # the client left: not the gateway's error
        elif row.status != 200:
            self.errors += 1
        else:
            self.latencies.append(float(row.latency_ms))
            if row.ttft_ms is not None:
                self.ttfts.append(float(row.ttft_ms))
        self.fallbacks += _moved_on(row.fallback_chain)
        self.cache_hits += row.cache == "hit"

    def _add_overhead(self, row: Any) -> None:
        """A background call: its cost is routing's overhead; it is no request of a client."""
        self.overhead_calls += 1
        if row.cost_usd is None:
            self.unpriced += 1  # left out of the money columns: said, as for a request
            return
        self.cost += Decimal(row.cost_usd)
        self.overhead += Decimal(row.cost_usd)

    def figures(self, baselined: bool) -> dict[str, Any]:
        """The group's figures; ``baselined``: whether the report has a baseline at all (a
        group of background calls alone then shows their cost as a loss, so groups add up)."""
        compared = self.compared > 0 or (baselined and self.overhead_calls > 0)
        savings = self.baseline - self.compared_cost - self.overhead
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": _usd(self.cost),
            "overhead_usd": _usd(self.overhead),
            "overhead_calls": self.overhead_calls,
            "baseline_cost_usd": _usd(self.baseline) if compared else None,
            "savings_usd": _usd(savings) if compared else None,
            "savings_pct": _ratio(savings * 100, self.baseline) if compared else None,
            "cost_per_1m_tokens_usd": _ratio(self.cost * 1_000_000, Decimal(self.priced_tokens)),
            "latency_ms_p50": _ms(nearest_rank(self.latencies, 50)),
            "latency_ms_p95": _ms(nearest_rank(self.latencies, 95)),
            "ttft_ms_p50": _ms(nearest_rank(self.ttfts, 50)),
            "fallback_rate": _rate(self.fallbacks, self.requests),
            "error_rate": _rate(self.errors, self.requests),
            "abandoned_rate": _rate(self.abandoned, self.requests),
            "cache_hit_rate": _rate(self.cache_hits, self.requests),
            "priced_requests": self.priced,
            "compared_requests": self.compared,
            "unpriced_requests": self.unpriced,
            "estimated_usage_requests": self.estimated,
            "feedback_avg": _mean(self.feedback_sum, self.feedback_count),
            "feedback_count": self.feedback_count,
            "judge_avg": _mean(self.judge_sum, self.judge_count),
            "judge_count": self.judge_count,
        }


def _mean(total: float, count: int) -> float | None:
    return round(total / count, 4) if count else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _usd(value: Decimal) -> float:
    return float(round(value, 8))


def _ratio(numerator: Decimal, denominator: Decimal) -> float | None:
    if denominator == 0:
        return None
    return float(round(numerator / denominator, 4))


def _rate(count: int, total: int) -> float | None:
    return None if total == 0 else round(count / total, 4)


def _keys(row: Any, by: str | None) -> list[str]:
    """The groups a row counts in: one, except by capability, where a request that needed
    several capabilities counts in each."""
    if by == "capability":
        return [c for c in (row.capabilities or "").split(",") if c] or [PLAIN]
    return [_key(row, by)]


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
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    # In UTC: SQLite keeps the times as naive UTC text and compares the bounds as text too, so
    # a bound with another offset (``--since 2026-11-20T09:00+02:00``) would be hours off there.
    since, until = _utc(since), _utc(until or datetime.now(UTC))
    span: tuple[Any, ...] = (RequestRow.ts >= since, RequestRow.ts < until)
    if team is not None:
        span = (*span, RequestRow.team == team)
    client = or_(RequestRow.canary_arm.is_(None), RequestRow.canary_arm.not_in(OVERHEAD_ARMS))
    with engine.connect() as connection:
        total_rows = connection.execute(select(func.count()).where(*span)).scalar_one()
        progress(0, total_rows)
        total = _Acc()
        groups: dict[str, _Acc] = {}
        done = 0
        result = connection.execution_options(yield_per=CHUNK).execute(
            select(*_COLUMNS).where(*span).order_by(RequestRow.ts)
        )
        for chunk in result.partitions():
            for row in chunk:
                total.add(row)
                for key in _keys(row, by):
                    groups.setdefault(key, _Acc()).add(row)
            done += len(chunk)
            progress(done, total_rows)
        _add_quality(connection, (*span, client), by, total, groups)
        labelling = connection.execute(
            select(func.count(), func.sum(RequestRow.cost_usd)).where(
                *span, RequestRow.canary_arm.in_(LABEL_ARMS)
            )
        ).one()
    baselined = total.compared > 0
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "team": team,
        "totals": total.figures(baselined),
        "groups": [{"key": key, **acc.figures(baselined)} for key, acc in sorted(groups.items())]
        if by is not None
        else [],
        "labelling": {"calls": int(labelling[0]), "cost_usd": _usd(Decimal(labelling[1] or 0))},
    }


def _add_quality(
    connection: Any, where: tuple[Any, ...], by: str | None, total: _Acc, groups: dict[str, _Acc]
) -> None:
    """``/v1/feedback`` scores and judge grades, counted with the group of the request they
    rate."""
    for row, score in feedback_scores(connection, _COLUMNS, where):
        for acc in (total, *(groups.setdefault(k, _Acc()) for k in _keys(row, by))):
            acc.feedback_sum += score
            acc.feedback_count += 1
    for row, grade in judge_grades(connection, _COLUMNS, where):
        for acc in (total, *(groups.setdefault(k, _Acc()) for k in _keys(row, by))):
            acc.judge_sum += grade
            acc.judge_count += 1


# The CSV's columns: the group's key, then every figure of the JSON report in its order.
CSV_FIELDS = (
    "key",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "overhead_usd",
    "overhead_calls",
    "baseline_cost_usd",
    "savings_usd",
    "savings_pct",
    "cost_per_1m_tokens_usd",
    "latency_ms_p50",
    "latency_ms_p95",
    "ttft_ms_p50",
    "fallback_rate",
    "error_rate",
    "abandoned_rate",
    "cache_hit_rate",
    "priced_requests",
    "compared_requests",
    "unpriced_requests",
    "estimated_usage_requests",
    "feedback_avg",
    "feedback_count",
    "judge_avg",
    "judge_count",
)


def ledger_teams(engine: Engine, since: datetime) -> list[str]:
    """The teams with requests in the ledger since ``since`` (for the dashboard's selector)."""
    query = (
        select(RequestRow.team)
        .where(RequestRow.team.is_not(None), RequestRow.ts >= _utc(since))
        .distinct()
    )
    with engine.connect() as connection:
        return sorted(str(team) for team in connection.execute(query).scalars())


def known_teams(engine: Engine) -> list[str]:
    """Every team a report can be about: those made (``tiergate keys team``) and those found in
    the ledger's requests."""
    with engine.connect() as connection:
        teams = {
            str(team)
            for team in connection.execute(
                select(RequestRow.team).where(RequestRow.team.is_not(None)).distinct()
            ).scalars()
        }
        if inspect(connection).has_table(TeamRow.__tablename__):
            teams.update(str(team) for team in connection.execute(select(TeamRow.id)).scalars())
    return sorted(teams)


def rows_for_output(report: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The groups (or the totals alone) plus a total line, for tables and CSV."""
    yield from report["groups"]
    yield {"key": "total", **report["totals"]}


def _moved_on(chain: str) -> bool:
    """Whether a request's ``fallback_chain`` ("small>small>big") left its first backend: a
    retry on the same backend is an attempt too, but no fallback."""
    backends = chain.split(">")
    return any(b != backends[0] for b in backends[1:])

"""``GET /dashboard``: the savings report as one HTML page for a browser (admin key, which a
browser sends as the password of HTTP Basic auth; see ``gateway.http.middleware``).

The page is rendered here, charts included (inline SVG from ``gateway.http.dashboard_charts``): no
script, font or stylesheet is fetched from anywhere, so it works on a machine with no internet.
Every figure comes from ``build_report``, the function behind ``GET /admin/report`` and
``tiergate report``, so the page, the API and the CLI agree. Elements showing a report figure
carry ``data-field`` (the report's name for it) and ``data-value`` (its exact value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import HTMLResponse

from gateway.errors import ServiceUnavailable
from gateway.governance.store import list_teams
from gateway.http.dashboard_charts import (
    STYLE,
    Chart,
    Format,
    Series,
    bars,
    columns,
    count,
    esc,
    ms,
    percent,
    rate,
    raw,
    series_of,
    usd,
)
from gateway.http.dashboard_form import Form, period_form, team_note
from gateway.http.ledger_calls import ledger_call, ledger_deadline
from gateway.ledger.report import baselines_line, build_reports, ledger_teams, parse_since
from gateway.ledger.report_window import EXACT_LIMIT
from gateway.ledger.writer import LedgerWriter

router = APIRouter()

Card = tuple[str, str, Format, str]  # report field, label, format, note under the figure
# The figures the report may take from latency histograms (``percentiles.max_relative_error``).
PERCENTILE_FIELDS = frozenset({"latency_ms_p50", "latency_ms_p95", "ttft_ms_p50"})

CARD_GROUPS: tuple[tuple[str, tuple[Card, ...]], ...] = (
    (
        "Traffic and money",
        (
            ("requests", "Requests", count, ""),
            ("cost_usd", "Cost", usd, "what the routed requests cost, overhead included"),
            ("overhead_usd", "Routing overhead", usd, "shadow, judge and labelling calls"),
            ("baseline_cost_usd", "Baseline cost", usd, "the same tokens on the baseline model"),
            ("savings_usd", "Savings", usd, "baseline − cost of baselined requests − overhead"),
            ("savings_pct", "Savings %", percent, "of the baseline cost"),
            ("cost_per_1m_tokens_usd", "Cost per 1M tokens", usd, "priced requests"),
            ("unpriced_requests", "Unpriced requests", count, "left out of the money figures"),
        ),
    ),
    (
        "Speed and reliability",
        (
            ("latency_ms_p50", "Latency p50", ms, "answered requests"),
            ("latency_ms_p95", "Latency p95", ms, "answered requests"),
            ("ttft_ms_p50", "First token p50", ms, "time to first token"),
            ("error_rate", "Error rate", rate, "answered with an error"),
            ("abandoned_rate", "Abandoned", rate, "the client left mid-answer"),
            ("fallback_rate", "Fallback rate", rate, "passed on to another backend"),
            ("cache_hit_rate", "Cache hit rate", rate, "served from the cache"),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Reports:
    """The three groupings the page draws, over one period."""

    by_day: dict[str, Any]
    by_tier: dict[str, Any]
    by_backend: dict[str, Any]
    teams: tuple[str, ...] = ()  # for the selector: in the ledger's period, or in gov_teams

    @property
    def totals(self) -> dict[str, Any]:
        totals: dict[str, Any] = self.by_day["totals"]
        return totals


def collect(engine: Engine, since: datetime, until: datetime, team: str | None = None) -> Reports:
    # One read of the ledger for the three groupings (each of its own took a third of 2 s at
    # a million requests).
    by_day, by_tier, by_backend = build_reports(
        engine, since=since, until=until, bys=("day", "tier", "backend"), team=team
    )
    teams = set(ledger_teams(engine, since))
    # No governance tables (a schema from before 0010): the ledger's teams only.
    with contextlib.suppress(SQLAlchemyError):
        teams.update(row["id"] for row in list_teams(engine))
    return Reports(by_day, by_tier, by_backend, tuple(sorted(teams)))


@router.get("/dashboard", include_in_schema=False)
async def dashboard(
    request: Request, since: str = "7d", until: str | None = None, team: str | None = None
) -> HTMLResponse:
    """The savings report with charts, for the period ``since``..``until`` (default: now);
    ``team``: only that team's requests."""
    team = team or None  # the selector's "all teams" sends team=''
    form = Form(since, until, team)
    ledger: LedgerWriter | None = request.app.state.ledger
    if ledger is None:
        notice = (
            '<section class="empty" data-testid="ledger-off"><h2>The ledger is off</h2>'
            "<p>This gateway runs with <code>TIERGATE_LEDGER=false</code>, so no request is "
            "recorded and there is nothing to report. Set <code>TIERGATE_LEDGER=true</code> and "
            "restart it.</p></section>"
        )
        return _page(notice, form)
    try:
        start = parse_since(since)
        end = parse_since(until) if until else datetime.now(UTC)
    except ValueError as exc:
        problem = f'<section class="notice bad" data-testid="bad-request">{esc(exc)}</section>'
        return _page(problem, form, status=400)
    try:
        async with ledger_deadline():
            await ledger.flush()  # include what this process has just answered
            reports = await ledger_call(partial(collect, ledger.engine, start, end, team))
    except ServiceUnavailable as exc:
        problem = (
            f'<section class="notice bad" data-testid="ledger-down">{esc(exc.message)}</section>'
        )
        return _page(problem, form, status=503)
    policy = request.app.state.runtime.active.policy
    tier_order = [tier.name for tier in policy.tiers]
    body = render(reports, tier_order=tier_order, policy_hash=policy.hash)
    return _page(body, Form(since, until, team, reports.teams))


def render(reports: Reports, *, tier_order: Sequence[str], policy_hash: str) -> str:
    """The page's main part: period, notices, headline figures, charts."""
    totals = reports.totals
    out = [
        f'<p class="period" data-testid="period">{_when(reports.by_day["since"])} → '
        f"{_when(reports.by_day['until'])} · policy <code>{esc(policy_hash)}</code>"
        f"{team_note(reports.by_day.get('team'))}</p>"
    ]
    if reports.by_day["baselines"]:
        out.append(
            '<p class="period" data-testid="baselines">Baseline model: '
            f"{esc(baselines_line(reports.by_day['baselines']))}</p>"
        )
    if totals["unpriced_requests"]:
        out.append(
            '<p class="notice">'
            f"{_figure('unpriced_requests', totals, count, 'span', testid=False)} "
            f"{_plural(totals['unpriced_requests'], 'request')} went to backends with no price: "
            "left out of cost, baseline and savings rather than counted as $0. Give them a price "
            "under <code>pricing.backends</code> in the policy.</p>"
        )
    if totals["estimated_usage_requests"]:
        out.append(
            '<p class="notice">'
            "Token counts are estimated for "
            f"{_figure('estimated_usage_requests', totals, count, 'span')} "
            f"{_plural(totals['estimated_usage_requests'], 'request')} (a stream cut short, or "
            "no usage reported).</p>"
        )
    out.append(_cards(totals, approximate(reports.by_day)))
    if not totals["requests"]:
        out.append(
            '<section class="empty" data-testid="empty-state">'
            "<h2>No requests in this period yet</h2>"
            "<p>Rows appear here as soon as the gateway answers requests. Pick a longer period "
            "above, or send some traffic through <code>/v1/chat/completions</code>.</p></section>"
        )
    else:
        out.append(_charts(reports, tier_order))
    out.append(_definitions())
    return "\n".join(out)


def _figure(
    field: str, figures: dict[str, Any], fmt: Format, tag: str = "div", *, testid: bool = True
) -> str:
    """A report figure as shown, with its field and exact value (and a test id, once a page)."""
    value = figures[field]
    marker = f' data-testid="{field.replace("_", "-")}"' if testid else ""
    return (
        f'<{tag} class="value"{marker} data-field="{field}" data-value="{raw(value)}">'
        f"{esc(fmt(value))}</{tag}>"
    )


def approximate(report: dict[str, Any]) -> str:
    """How far the report's latency percentiles may be from the exact ones, in words ("" when
    exact): past 20,000 answered requests they come from hourly histograms."""
    error = float(report.get("percentiles", {}).get("max_relative_error") or 0.0)
    return f"≈ within {error * 100:g}%" if error > 0 else ""


def _cards(totals: dict[str, Any], approx: str) -> str:
    out = []
    for heading, cards in CARD_GROUPS:
        out.append(f'<h2 class="group">{esc(heading)}</h2>')
        out.append(f'<section class="cards" aria-label="{esc(heading)}">')
        out.extend(
            _card(totals, *card, approx=approx if card[0] in PERCENTILE_FIELDS else "")
            for card in cards
        )
        out.append("</section>")
    return "\n".join(out)


def _card(
    totals: dict[str, Any], field: str, label: str, fmt: Format, note: str, *, approx: str = ""
) -> str:
    tone = ""
    if field == "savings_usd":
        value = totals[field]
        tone = "" if value is None else (" bad" if value < 0 else " good")
    if field == "requests":
        shown = (
            f"{_figure('prompt_tokens', totals, count, 'span')} prompt + "
            f"{_figure('completion_tokens', totals, count, 'span')} completion tokens"
        )
    else:
        shown = esc(note)
    if approx and totals[field] is not None:
        shown += f' · <span class="approx" title="{esc(APPROX_WHY)}">{esc(approx)}</span>'
    return (
        f'<div class="card{tone}"><div class="label">{esc(label)}</div>'
        f'{_figure(field, totals, fmt)}<div class="note">{shown}</div></div>'
    )


def _ordered(groups: list[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Tiers as the policy lists them (cheapest first), then any others by name."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(groups, key=lambda g: (rank.get(g["key"], len(rank)), g["key"]))


def _chart(
    by: str,
    testid: str,
    title: str,
    description: str,
    groups: list[dict[str, Any]],
    series: Sequence[tuple[str, str]],
    fmt: Format,
    *,
    whole: bool = False,
) -> Chart:
    return Chart(
        testid=testid,
        title=title,
        description=description,
        by=by,
        categories=tuple(str(g["key"]) for g in groups),
        series=tuple(Series(field, label, series_of(groups, field)) for field, label in series),
        fmt=fmt,
        whole=whole,
    )


def _charts(reports: Reports, tier_order: Sequence[str]) -> str:
    days = reports.by_day["groups"]
    tiers = _ordered(reports.by_tier["groups"], tier_order)
    backends = reports.by_backend["groups"]
    savings = _chart(
        "day",
        "chart-savings",
        "Savings over time",
        "Per day (UTC): what the baseline model would have cost, what routing cost, and the "
        "difference. Priced requests only.",
        days,
        (("baseline_cost_usd", "Baseline cost"), ("cost_usd", "Cost"), ("savings_usd", "Savings")),
        usd,
    )
    tier_mix = _chart(
        "tier",
        "chart-tiers",
        "Tier mix",
        "Requests per tier.",
        tiers,
        (("requests", "Requests"),),
        count,
        whole=True,
    )
    per_token = _chart(
        "tier",
        "chart-cost-per-1m",
        "Cost per 1M tokens by tier",
        "Cost over prompt + completion tokens of the priced requests; n/a when none is priced.",
        tiers,
        (("cost_per_1m_tokens_usd", "Cost per 1M tokens"),),
        usd,
    )
    approx = approximate(reports.by_backend)
    latency = _chart(
        "backend",
        "chart-latency",
        "Latency by backend",
        "Wall latency of answered requests, nearest-rank p50 and p95"
        + (f" ({approx} of the exact values: {APPROX_WHY})." if approx else "."),
        backends,
        (("latency_ms_p50", "p50"), ("latency_ms_p95", "p95")),
        ms,
    )
    reliability = _chart(
        "backend",
        "chart-reliability",
        "Fallbacks and errors by backend",
        "Share of requests that needed a fallback, and share not answered with 200.",
        backends,
        (("fallback_rate", "Fallback rate"), ("error_rate", "Error rate")),
        rate,
    )
    panels = [(savings, columns, " wide")]
    panels += [(chart, bars, "") for chart in (tier_mix, per_token, latency, reliability)]
    out = ['<section class="charts">']
    for chart, draw, extra in panels:
        out.append(
            f'<figure class="panel{extra}"><figcaption><h2>{esc(chart.title)}</h2>'
            f"<p>{esc(chart.description)}</p></figcaption>{draw(chart)}</figure>"
        )
    out.append("</section>")
    return "\n".join(out)


def _definitions() -> str:
    return (
        "<footer><h2>How to read this</h2><ul>"
        "<li><b>Savings</b> = baseline cost − the cost of the same requests − routing's "
        "<b>overhead</b>, over requests whose cost and baseline are both known: the baseline is "
        "what the same tokens would have cost on the policy's baseline model, and a request "
        "with no baseline (an embeddings call) counts in the cost card but not here. The "
        "overhead is the calls the gateway makes on its own (a canary's shadow and judge calls, "
        "the adaptive scorer's judged samples), which count in no request figure; the cost card "
        "includes it.</li>"
        "<li><b>Unpriced</b> requests (a backend with no price) are counted apart, never as $0."
        "</li><li><b>Latency</b> percentiles use the nearest-rank method over answered requests;"
        f" {esc(APPROX_WHY)}, and the page marks them ≈ with how far from the exact value they"
        " may be."
        "</li><li>The same figures: <code>GET /admin/report?since=…&amp;by=day|tier|backend</code>"
        " and <code>tiergate report</code>.</li></ul></footer>"
    )


APPROX_WHY = (
    f"past {EXACT_LIMIT:,} answered requests in the period they come from hourly histograms"
)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _when(iso: str) -> str:
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return esc(moment.strftime("%Y-%m-%d %H:%M UTC"))


def _page(main: str, form: Form, *, status: int = 200) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tiergate · savings report</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header><div class="brand">tiergate <span>savings report</span></div>
{period_form(form)}</header>
<main>
{main}
</main>
</body>
</html>
"""
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

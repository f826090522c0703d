"""Inline SVG bar charts, number formats and the stylesheet for ``/dashboard``: drawn in Python
on the server, so the page needs no script, font or stylesheet from anywhere else.

Every bar carries what it shows (``data-series``, ``data-key``, ``data-value`` with the report's
number as Python prints it), so a test can hold the picture against the JSON report. Text from
the ledger (tier, backend, day names) is escaped everywhere it appears.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

Number = float | int | None
Format = Callable[[Number], str]

NA = "n/a"
WIDTH = 640  # viewBox units; the SVG scales to its panel
WIDE = 1000  # the time chart spans the page
LABEL_CHARS = 22


def esc(value: object) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return escape(str(value), quote=True)


def raw(value: Number) -> str:
    """A number exactly as the JSON report has it (``repr`` round-trips a float); '' for none."""
    return "" if value is None else repr(value)


# --- number formats -----------------------------------------------------------------------------


def usd(value: Number) -> str:
    """Dollars with three significant digits below $100 (a request can cost $0.000012)."""
    if value is None:
        return NA
    magnitude = abs(float(value))
    decimals = 2
    if 0 < magnitude < 100:
        decimals = min(8, max(2, 2 - math.floor(math.log10(magnitude))))
    sign = "-" if value < 0 and round(magnitude, decimals) > 0 else ""
    return f"{sign}${magnitude:,.{decimals}f}"


def percent(value: Number) -> str:
    """A figure already in percent (savings %)."""
    return NA if value is None else f"{value:.1f}%"


def rate(value: Number) -> str:
    """A fraction (error, fallback, cache-hit rates) shown as a percentage."""
    return NA if value is None else f"{value * 100:.1f}%"


def ms(value: Number) -> str:
    return NA if value is None else f"{value:,.1f} ms"


def count(value: Number) -> str:
    return NA if value is None else f"{int(value):,}"


# --- charts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # machine name: the bars' data-series and CSS class
    label: str  # legend text
    values: tuple[Number, ...]  # one per category


@dataclass(frozen=True, slots=True)
class Chart:
    testid: str
    title: str
    description: str
    by: str  # the report grouping the categories come from (day, tier, backend)
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    fmt: Format
    whole: bool = False  # counts: no ticks between whole numbers


def ticks(low: float, high: float, *, whole: bool = False, wanted: int = 4) -> list[float]:
    """Round axis values (steps of 1, 2, 2.5 or 5 x 10^k) covering ``low``..``high``."""
    if not high > low:
        high = low + 1.0
    rough = (high - low) / wanted
    if whole:
        rough = max(rough, 1.0)
    magnitude = 10.0 ** math.floor(math.log10(rough))
    steps = (1.0, 2.0, 5.0, 10.0) if whole else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(m * magnitude for m in steps if m * magnitude >= rough)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [_clean(i * step) for i in range(first, last + 1)]


def _clean(value: float) -> float:
    """Drop float noise (0.30000000000000004) so tick labels read well."""
    return float(f"{value:.12g}")


def _domain(chart: Chart) -> list[float]:
    values = [float(v) for s in chart.series for v in s.values if v is not None]
    return ticks(min([0.0, *values]), max([0.0, *values]), whole=chart.whole)


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _open(chart: Chart, width: float, height: float) -> list[str]:
    ident = f"{chart.testid}-title"
    return [
        f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'data-testid="{esc(chart.testid)}" data-by="{esc(chart.by)}" '
        f'aria-label="{esc(chart.title)}" '
        f'aria-labelledby="{ident} {ident}-desc">',
        f'<title id="{ident}">{esc(chart.title)}</title>',
        f'<desc id="{ident}-desc">{esc(chart.description)}</desc>',
    ]


def _legend(chart: Chart, x: float, y: float) -> list[str]:
    out = []
    for series in chart.series:
        out.append(
            f'<rect class="swatch s-{esc(series.name)}" x="{x:.1f}" y="{y - 9:.1f}" '
            'width="10" height="10" rx="2"/>'
        )
        out.append(f'<text class="legend" x="{x + 14:.1f}" y="{y:.1f}">{esc(series.label)}</text>')
        x += 24 + 7 * len(series.label)
    return out


def _bar(
    chart: Chart,
    series: Series,
    key: str,
    value: float | int,
    box: tuple[float, float, float, float],
) -> str:
    x, y, w, h = box
    kind = " negative" if value < 0 else ""
    tip = f"{key} · {series.label}: {chart.fmt(value)}"
    return (
        f'<rect class="bar s-{esc(series.name)}{kind}" x="{x:.2f}" y="{y:.2f}" '
        f'width="{w:.2f}" height="{h:.2f}" data-testid="bar" data-series="{esc(series.name)}" '
        f'data-key="{esc(key)}" data-value="{raw(value)}"><title>{esc(tip)}</title></rect>'
    )


def columns(chart: Chart) -> str:
    """Vertical grouped bars, one group per category (days, left to right)."""
    left, right, top, bottom = 72.0, 12.0, 30.0, 44.0
    height = 280.0
    plot_w, plot_h = WIDE - left - right, height - top - bottom
    axis = _domain(chart)
    low, high = axis[0], axis[-1]

    def y_of(value: float) -> float:
        return top + (high - value) / (high - low) * plot_h

    out = _open(chart, WIDE, height)
    out += _legend(chart, left, 16)
    for tick in axis:
        y = y_of(tick)
        out.append(
            f'<line class="grid" x1="{left}" x2="{WIDE - right}" y1="{y:.2f}" y2="{y:.2f}"/>'
        )
        out.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.2f}">{esc(chart.fmt(tick))}</text>'
        )
    groups = max(1, len(chart.categories))
    group_w = plot_w / groups
    bar_w = min(28.0, group_w * 0.8 / max(1, len(chart.series)))
    label_every = max(1, math.ceil(groups / 16))
    zero = y_of(0.0)
    for i, key in enumerate(chart.categories):
        start = left + i * group_w + (group_w - bar_w * len(chart.series)) / 2
        for j, series in enumerate(chart.series):
            value = series.values[i]
            if value is None:
                continue
            y = y_of(float(value))
            box = (start + j * bar_w, min(y, zero), bar_w * 0.92, abs(zero - y))
            out.append(_bar(chart, series, key, value, box))
        if i % label_every == 0:
            centre = left + (i + 0.5) * group_w
            shown = key[5:] if len(key) == 10 and key[4] == "-" else _short(key)  # a day: MM-DD
            out.append(
                f'<text class="cat" x="{centre:.2f}" y="{height - bottom + 18:.2f}">'
                f"{esc(shown)}<title>{esc(key)}</title></text>"
            )
    out.append(
        f'<line class="axis" x1="{left}" x2="{WIDE - right}" y1="{zero:.2f}" y2="{zero:.2f}"/>'
    )
    out.append("</svg>")
    return "\n".join(out)


def bars(chart: Chart) -> str:
    """Horizontal grouped bars, one row per category (tiers, backends), values at the ends."""
    left, right, top = 160.0, 92.0, 30.0
    bar_h, gap, row_gap = 14.0, 3.0, 12.0
    row_h = len(chart.series) * (bar_h + gap) - gap + row_gap
    height = top + max(1, len(chart.categories)) * row_h + 22.0
    plot_w = WIDTH - left - right
    axis = _domain(chart)
    low, high = axis[0], axis[-1]

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    out = _open(chart, WIDTH, height)
    out += _legend(chart, left, 16)
    bottom = height - 22.0
    for tick in axis:
        x = x_of(tick)
        out.append(
            f'<line class="grid" x1="{x:.2f}" x2="{x:.2f}" y1="{top - 4}" y2="{bottom:.2f}"/>'
        )
        out.append(
            f'<text class="tick mid" x="{x:.2f}" y="{bottom + 16:.2f}">'
            f"{esc(chart.fmt(tick))}</text>"
        )
    zero = x_of(0.0)
    for i, key in enumerate(chart.categories):
        row_top = top + i * row_h
        middle = row_top + (row_h - row_gap) / 2
        out.append(
            f'<text class="cat left" x="{left - 8}" y="{middle + 4:.2f}">'
            f"{esc(_short(key))}<title>{esc(key)}</title></text>"
        )
        for j, series in enumerate(chart.series):
            value = series.values[i]
            y = row_top + j * (bar_h + gap)
            if value is None:
                out.append(
                    f'<text class="val muted" x="{zero + 4:.2f}" y="{y + 11:.2f}">{NA}</text>'
                )
                continue
            x = x_of(float(value))
            box = (min(x, zero), y, abs(x - zero), bar_h)
            out.append(_bar(chart, series, key, value, box))
            out.append(
                f'<text class="val" x="{max(x, zero) + 4:.2f}" y="{y + 11:.2f}">'
                f"{esc(chart.fmt(value))}</text>"
            )
    out.append(
        f'<line class="axis" x1="{zero:.2f}" x2="{zero:.2f}" y1="{top - 4}" y2="{bottom:.2f}"/>'
    )
    out.append("</svg>")
    return "\n".join(out)


def series_of(groups: Sequence[dict[str, object]], field: str) -> tuple[Number, ...]:
    """One report column across the groups, as the chart's values."""
    out: list[Number] = []
    for group in groups:
        value = group[field]
        if value is not None and not isinstance(value, int | float):
            raise TypeError(f"report field {field!r} is not a number: {value!r}")
        out.append(value)
    return tuple(out)


STYLE = """
:root{--bg:#f4f5f7;--panel:#fff;--ink:#1d2430;--muted:#5f6b7a;--line:#e3e6ea;--accent:#3b6fd8;
--baseline:#aab4c2;--cost:#e8833a;--save:#2e9d5b;--bad:#d64545;--p50:#6b9bf2;--p95:#1f3f8f;
--fallback:#f0b429}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1d2430;color:#fff;padding:14px 28px;display:flex;align-items:center;
justify-content:space-between;gap:16px;flex-wrap:wrap}
.brand{font-weight:700;font-size:18px}.brand span{font-weight:400;color:#aeb8c5;margin-left:6px}
.period-form{display:flex;gap:8px;align-items:center;color:#cfd6df}
select,button{font:inherit;padding:4px 10px;border-radius:6px;border:1px solid #4a5565;
background:#2a3342;color:#fff}
button{cursor:pointer;background:var(--accent);border-color:var(--accent)}
main{max-width:1280px;margin:0 auto;padding:20px 28px 40px}
code{font-size:12px;background:#eef0f3;padding:1px 4px;border-radius:4px}
.period{color:var(--muted);margin:0 0 16px}
.notice{background:#fff8e6;border:1px solid #f3d48b;border-radius:8px;padding:10px 14px;
margin:0 0 16px}
.notice.bad{background:#fdeeee;border-color:#efb0b0}
.notice .value{font-weight:650}
h2.group{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);
margin:0 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin-bottom:18px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .note{color:var(--muted);font-size:12px;margin-top:2px}
.card .note .value{font-size:12px;font-weight:600;color:var(--ink)}
.card.good{border-color:#9fd8b5;background:#f1fbf5}.card.good>.value{color:var(--save)}
.card.bad{border-color:#efb0b0;background:#fdf3f3}.card.bad>.value{color:var(--bad)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(520px,100%),1fr));gap:16px}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:14px 16px;
margin:0}
.panel.wide{grid-column:1/-1}
.panel h2{font-size:15px;margin:0 0 2px}.panel p{margin:0 0 8px;color:var(--muted);font-size:12px}
svg.chart{width:100%;height:auto;display:block}
svg text{font-size:11px;fill:var(--muted)}
svg .legend,svg .cat,svg .val{fill:var(--ink)}
svg .tick,svg .cat.left{text-anchor:end}
svg .tick.mid,svg .cat{text-anchor:middle}
svg .val.muted{fill:var(--muted);font-style:italic}
svg .grid{stroke:var(--line)}svg .axis{stroke:#9aa4b1}
.s-baseline_cost_usd{fill:var(--baseline)}.s-cost_usd,.s-cost_per_1m_tokens_usd{fill:var(--cost)}
.s-savings_usd{fill:var(--save)}.s-requests{fill:var(--accent)}
.s-latency_ms_p50{fill:var(--p50)}.s-latency_ms_p95{fill:var(--p95)}
.s-fallback_rate{fill:var(--fallback)}.s-error_rate{fill:var(--bad)}
rect.bar.negative{fill:var(--bad)}
.empty{background:var(--panel);border:1px dashed #c3cad3;border-radius:10px;padding:32px;
text-align:center;color:var(--muted)}
.empty h2{color:var(--ink);margin-top:0}
footer{margin-top:24px;color:var(--muted);font-size:12px}
footer h2{font-size:13px;color:var(--ink);margin:0 0 4px}footer ul{margin:0;padding-left:18px}
"""

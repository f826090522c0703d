"""/dashboard: the savings report as one HTML page. Its figures and bars are the admin report
API's, names from the ledger are escaped, it fetches nothing from elsewhere, it opens with the
admin key as a bearer token or an HTTP Basic password, and it renders in a real headless
Chromium (a screenshot is kept in test-artifacts/dashboard.png)."""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway.ledger import report as report_module
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.store import insert_batch
from tests.http import live_server
from tests.http.helpers import TWO_TIERS, fakes, gateway
from tests.ledger import conftest as ledger_fixtures

# The ledger fixtures (SQLite and PostgreSQL), for the test that reads a filled ledger.
pg_cluster = ledger_fixtures.pg_cluster
ledger_url = ledger_fixtures.ledger_url

APP_KEY = "k-dash-app-1111"
ADMIN_KEY = "k-dash-admin-2222"
KEYS = {"api_keys": f"app1:{APP_KEY}", "admin_key": ADMIN_KEY}
CHALLENGE = 'Basic realm="tiergate"'
HOSTILE_TIER = '<script>alert("tier")</script>'
HOSTILE_BACKEND = '"><img src=x onerror=alert(1)>'
REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What each chart draws: (report grouping, report fields). The brief of the page, not a result.
CHARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "chart-savings": ("day", ("baseline_cost_usd", "cost_usd", "savings_usd")),
    "chart-tiers": ("tier", ("requests",)),
    "chart-cost-per-1m": ("tier", ("cost_per_1m_tokens_usd",)),
    "chart-latency": ("backend", ("latency_ms_p50", "latency_ms_p95")),
    "chart-reliability": ("backend", ("fallback_rate", "error_rate")),
}
RATES = {"error_rate", "fallback_rate", "cache_hit_rate"}  # fractions, shown in percent
HEADLINE = {
    "requests",
    "cost_usd",
    "baseline_cost_usd",
    "savings_usd",
    "savings_pct",
    "cost_per_1m_tokens_usd",
    "latency_ms_p50",
    "latency_ms_p95",
    "error_rate",
    "fallback_rate",
    "cache_hit_rate",
    "unpriced_requests",
}
PRICED_POLICY = f"""
version: 1
backends:
  small: {{type: fake, model: small-model, script: [{{reply: "small answer here"}}]}}
  big: {{type: fake, model: big-model, script: [{{reply: "big answer here"}}]}}
tiers:
  - {{name: cheap, max_score: {live_server.GENEROUS}, backends: [small]}}
  - {{name: strong, backends: [big]}}
pricing:
  baseline: {{usd_per_1m_input: 2.5, usd_per_1m_output: 10.0}}
  backends:
    small: {{usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}}
    big: {{usd_per_1m_input: 1.0, usd_per_1m_output: 4.0}}
"""


# --- a ledger with known rows ---------------------------------------------------------------


def entry(
    ts: datetime,
    *,
    tier: str,
    backend: str,
    cost: str | None,
    baseline: str | None,
    route: str = "auto",
    status: int = 200,
    attempts: int = 1,
    cache: str = "off",
    latency_ms: float = 100.0,
    ttft_ms: float | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        id=str(uuid.uuid4()),
        ts=ts,
        key_id="app1",
        policy_hash="0123456789abcdef",
        route=route,
        tier=tier,
        backend=backend,
        model=f"{backend}-model",
        score=0.2,
        cache=cache,
        canary_arm=None,
        status=status,
        error_class=None if status == 200 else "BackendUnavailable",
        attempts=attempts,
        fallback_chain=">".join(["small"] * (attempts - 1) + [backend]),  # fell back to it
        stream=False,
        prompt_tokens=1200,
        completion_tokens=300,
        cached_tokens=0,
        usage_estimated=False,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        server_ms=None,
        load_ms=None,
        cost_usd=None if cost is None else Decimal(cost),
        cost_source="policy" if cost is not None else "unpriced",
        baseline_cost_usd=None if baseline is None else Decimal(baseline),
    )


def sample_rows(now: datetime, *, hostile: bool = True) -> list[LedgerEntry]:
    """Four days of traffic over two tiers and three backends: cheap answers, a fallback, a
    failure, a cache hit, an unpriced backend, a day that cost more than the baseline, and
    (with ``hostile``) names that are HTML."""

    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)

    def day(n: int, hours: float = 0.0) -> datetime:
        """``n`` days before today, around noon UTC, so each day's rows share a date."""
        return noon - timedelta(days=n, hours=hours)

    rows = [
        entry(day(4), tier="strong", backend="big", cost="0.0200", baseline="0.0100"),
        entry(day(3), tier="cheap", backend="small", cost="0.0010", baseline="0.0100"),
        entry(day(3, 1), tier="cheap", backend="small", cost="0.0012", baseline="0.0110",
              latency_ms=80.0, ttft_ms=20.0),
        entry(day(2), tier="strong", backend="big", cost="0.0050", baseline="0.0100",
              attempts=2, latency_ms=900.0, ttft_ms=300.0),
        entry(day(2, 1), tier="strong", backend="big", cost="0", baseline="0",
              status=502, attempts=2, latency_ms=1500.0),
        entry(day(2, 2), tier="cheap", backend="small", cost="0.0008", baseline="0.0090",
              latency_ms=60.0),
        entry(day(1), tier="cheap", backend="small", cost="0.0011", baseline="0.0100",
              cache="hit", latency_ms=5.0),
        entry(day(1, 1), tier="pinned", backend="mystery", cost=None, baseline="0.0100",
              latency_ms=250.0),
    ]  # fmt: skip
    if hostile:
        rows.append(
            entry(day(1, 2), tier=HOSTILE_TIER, backend=HOSTILE_BACKEND,
                  cost="0.0020", baseline="0.0100", latency_ms=120.0)
        )  # fmt: skip
    return rows


def fill(url: str, rows: Sequence[LedgerEntry]) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        insert_batch(engine, rows)
    finally:
        engine.dispose()


def savings_of(rows: Iterable[LedgerEntry]) -> float:
    """Baseline minus cost over the priced rows, worked out here from the rows themselves."""
    total = Decimal(0)
    for row in rows:
        if row.cost_usd is not None and row.baseline_cost_usd is not None:
            total += row.baseline_cost_usd - row.cost_usd
    return float(total)


# --- reading the page -------------------------------------------------------------------------


class Page(HTMLParser):
    """The tags of a page, the figures (``data-field`` elements with their text), and the bars
    of each chart."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.figures: list[tuple[str, str, str]] = []  # (field, data-value, shown text)
        self.bars: list[tuple[str, str, str, str]] = []  # (chart, key, series, data-value)
        self.charts: dict[str, dict[str, str]] = {}
        self._chart: str | None = None
        self._figure: tuple[str, dict[str, str], list[str]] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append((tag, values))
        if tag == "svg":
            self._chart = values.get("data-testid", "")
            self.charts[self._chart] = values
        if tag == "rect" and values.get("data-testid") == "bar":
            assert self._chart is not None, "a bar outside a chart"
            self.bars.append(
                (self._chart, values["data-key"], values["data-series"], values["data-value"])
            )
        if "data-field" in values:
            self._figure = (tag, values, [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None
        if self._figure is not None and tag == self._figure[0]:
            _, values, text = self._figure
            self.figures.append((values["data-field"], values["data-value"], "".join(text)))
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._figure is not None:
            self._figure[2].append(data)

    def testids(self) -> Counter[str]:
        return Counter(attrs["data-testid"] for _, attrs in self.tags if "data-testid" in attrs)


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def shown(text: str) -> tuple[float, float] | None:
    """The number a formatted figure shows ($1,234.50, 12.5%, 80.0 ms), and the rounding its
    last digit allows."""
    if text.strip() == "n/a":
        return None
    cleaned = re.sub(r"[^0-9.\-]", "", text)
    decimals = len(cleaned.partition(".")[2])
    return float(cleaned), 0.5 * 10.0**-decimals + 1e-12


def check_figures(figures: Sequence[tuple[str, str, str]], totals: dict[str, Any]) -> None:
    """Every figure on the page is the report's, both its data-value and the text shown."""
    assert {field for field, _, _ in figures} >= HEADLINE
    for field, value, text in figures:
        expected = totals[field]
        assert number(value) == expected, (field, value, expected)
        seen = shown(text)
        if expected is None:
            assert seen is None, (field, text)
            continue
        assert seen is not None, (field, text)
        scale = 100.0 if field in RATES else 1.0
        assert abs(seen[0] - expected * scale) <= seen[1], (field, text, expected)


def expected_bars(reports: dict[str, dict[str, Any]]) -> Counter[tuple[str, str, str, float]]:
    """One bar per chart, group and field that has a value in the JSON report."""
    out: Counter[tuple[str, str, str, float]] = Counter()
    for chart, (by, fields) in CHARTS.items():
        for group in reports[by]["groups"]:
            for field in fields:
                if group[field] is not None:
                    out[(chart, group["key"], field, group[field])] += 1
    return out


def drawn_bars(bars: Iterable[Sequence[str]]) -> Counter[tuple[str, str, str, float]]:
    out: Counter[tuple[str, str, str, float]] = Counter()
    for chart, key, series, value in bars:
        parsed = number(value)
        assert parsed is not None, (chart, key, series)
        out[(chart, key, series, parsed)] += 1
    return out


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


async def reports(client: httpx.AsyncClient, since: str = "7d") -> dict[str, dict[str, Any]]:
    out = {}
    for by in ("day", "tier", "backend"):
        response = await client.get(
            "/admin/report", params={"since": since, "by": by}, headers=bearer(ADMIN_KEY)
        )
        assert response.status_code == 200, response.text
        out[by] = response.json()
    return out


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(TWO_TIERS)
    return path


@pytest.fixture
def filled(policy_file: Path) -> list[LedgerEntry]:
    """The gateway's SQLite ledger, filled with the sample rows before the gateway starts."""
    rows = sample_rows(datetime.now(UTC))
    fill(f"sqlite:///{policy_file.parent / 'ledger.db'}", rows)
    return rows


# --- the page over HTTP -----------------------------------------------------------------------


async def test_the_page_shows_the_report_api_figures(policy_file: Path, ledger_url: str) -> None:
    """On SQLite and PostgreSQL, every headline figure and every bar of every chart is the
    JSON report's value for the same period, the savings are the rows' own, and the page names
    the baseline model the rows were priced at."""
    rows = [
        dataclasses.replace(row, baseline_model="openai/gpt-4o")
        for row in sample_rows(datetime.now(UTC), hostile=False)
    ]
    fill(ledger_url, rows)
    async with gateway(
        policy_file, backends=fakes("small", "big"), database_url=SecretStr(ledger_url), **KEYS
    ) as (client, _):
        response = await client.get("/dashboard?since=7d", headers=bearer(ADMIN_KEY))
        api = await reports(client)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert set(CHARTS) <= set(page.charts)
    for testid, (by, _) in CHARTS.items():
        assert page.charts[testid]["data-by"] == by
        assert page.charts[testid]["aria-label"]
    totals = api["day"]["totals"]
    assert totals["requests"] == len(rows)
    assert totals["savings_usd"] == pytest.approx(savings_of(rows), abs=1e-9)
    check_figures(page.figures, totals)
    assert len(api["day"]["groups"]) == 4
    assert drawn_bars(page.bars) == expected_bars(api)
    testids = page.testids()
    assert "empty-state" not in testids
    assert testids["savings-usd"] == 1
    compared = sum(r.cost_usd is not None and r.baseline_cost_usd is not None for r in rows)
    assert api["day"]["baselines"] == [{"model": "openai/gpt-4o", "requests": compared}]
    assert testids["baselines"] == 1
    assert f"Baseline model: openai/gpt-4o ({compared} requests)" in response.text
    assert {testid for testid, n in testids.items() if n > 1} == {"bar"}  # ids are unique


async def test_tiers_are_drawn_in_policy_order(
    policy_file: Path, filled: list[LedgerEntry]
) -> None:
    """The tier charts list the policy's tiers cheapest first, then tiers it no longer has."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=bearer(ADMIN_KEY))
    page = Page(response.text)
    order = [key for chart, key, _, _ in page.bars if chart == "chart-tiers"]
    assert order[:2] == ["cheap", "strong"]
    assert sorted(order[2:]) == order[2:]
    assert set(order[2:]) == {row.tier for row in filled} - {"cheap", "strong"}


LATENCY_NOTE = re.compile(
    r'data-field="(latency_ms_p50|latency_ms_p95|ttft_ms_p50)"[^>]*>[^<]*</div>'
    r'<div class="note">(.*?)</div></div>'
)


@pytest.mark.parametrize("exact", [True, False])
async def test_approximate_latency_percentiles_are_marked(
    policy_file: Path,
    filled: list[LedgerEntry],
    monkeypatch: pytest.MonkeyPatch,
    exact: bool,
) -> None:
    """Past ``EXACT_LIMIT`` answered requests (here: the limit set to 0) the report's latency
    percentiles come from histograms (``percentiles.max_relative_error`` 0.01): the page marks
    the three latency cards and the latency chart "≈ within 1%"; exact ones are not marked
    (before: nothing on the page told them apart)."""
    if not exact:
        monkeypatch.setattr(report_module, "EXACT_LIMIT", 0)
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard?since=7d", headers=bearer(ADMIN_KEY))
        api = await reports(client)
    assert response.status_code == 200, response.text
    error = 0.0 if exact else 0.01
    assert {api[by]["percentiles"]["max_relative_error"] for by in api} == {error}
    notes = dict(LATENCY_NOTE.findall(response.text))
    assert set(notes) == {"latency_ms_p50", "latency_ms_p95", "ttft_ms_p50"}
    caption = re.search(r"<h2>Latency by backend</h2><p>(.*?)</p>", response.text)
    assert caption is not None
    for text in [*notes.values(), caption[1]]:
        assert ("≈ within 1%" in text) is not exact, text
    if exact:
        assert "≈ within" not in response.text


async def test_names_from_the_ledger_are_escaped(
    policy_file: Path, filled: list[LedgerEntry]
) -> None:
    """Tier and backend names that are HTML appear as text: no tag of theirs reaches
    the page, and the escaped names are there."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=bearer(ADMIN_KEY))
    assert response.status_code == 200
    html = response.text
    for name in (HOSTILE_TIER, HOSTILE_BACKEND):
        assert name not in html
    assert "&lt;script&gt;alert(&quot;tier&quot;)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    page = Page(html)
    assert {tag for tag, _ in page.tags}.isdisjoint({"script", "img"})
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    keys = {key for _, key, _, _ in page.bars}
    assert {HOSTILE_TIER, HOSTILE_BACKEND} <= keys  # the parser unescapes them back


async def test_the_page_fetches_nothing_from_elsewhere(
    policy_file: Path, filled: list[LedgerEntry]
) -> None:
    """No URL to another host anywhere in the page: no script, stylesheet, font or image is
    loaded from a CDN; the only link is the inline (data:) icon."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=bearer(ADMIN_KEY))
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    assert "@import" not in html
    assert "url(" not in html
    page = Page(html)
    assert page.charts  # the page under test does have charts
    assert {tag for tag, _ in page.tags}.isdisjoint({"script", "iframe", "object", "embed", "img"})
    references = [
        (tag, name, value)
        for tag, attrs in page.tags
        for name, value in attrs.items()
        if name in ("src", "href", "action", "xlink:href", "srcset", "poster")
    ]
    assert references == [("link", "href", "data:,")]


async def test_an_empty_ledger_says_so(policy_file: Path) -> None:
    """With no request in the period the page says so, draws no chart, and shows zero
    requests and n/a (not a division by zero) for the ratios."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard?since=24h", headers=bearer(ADMIN_KEY))
        api = await reports(client, since="24h")
    assert response.status_code == 200, response.text
    page = Page(response.text)
    assert "empty-state" in page.testids()
    assert "No requests in this period yet" in response.text
    assert not page.charts
    figures = {field: (value, text) for field, value, text in page.figures}
    assert figures["requests"] == ("0", "0")
    assert figures["savings_pct"] == ("", "n/a")
    assert figures["latency_ms_p50"] == ("", "n/a")
    check_figures(page.figures, api["day"]["totals"])


async def test_the_ledger_off_is_explained(policy_file: Path) -> None:
    """With TIERGATE_LEDGER=false the page says the ledger is off and how to turn it on."""
    async with gateway(policy_file, backends=fakes("small", "big"), ledger=False, **KEYS) as (
        client,
        _,
    ):
        response = await client.get("/dashboard", headers=bearer(ADMIN_KEY))
    assert response.status_code == 200
    page = Page(response.text)
    assert "ledger-off" in page.testids()
    assert "TIERGATE_LEDGER=true" in response.text
    assert not page.figures
    assert not page.charts


async def test_a_bad_period_is_a_400_page(policy_file: Path) -> None:
    """A period that is not a time gets a 400 page that says what to write, echoing the value
    escaped."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get(
            "/dashboard", params={"since": "<b>soon</b>"}, headers=bearer(ADMIN_KEY)
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "<b>soon</b>" not in response.text
    assert "&lt;b&gt;soon&lt;/b&gt;" in response.text
    page = Page(response.text)
    assert "bad-request" in page.testids()
    assert "7d" in response.text


# --- who may see it ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [bearer(ADMIN_KEY), {"x-api-key": ADMIN_KEY}, basic("admin", ADMIN_KEY), basic("", ADMIN_KEY)],
)
async def test_the_admin_key_opens_the_dashboard(
    policy_file: Path, headers: dict[str, str]
) -> None:
    """The admin key opens the page as a bearer token, in x-api-key, or as the password of
    HTTP Basic auth with any user name."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=headers)
    assert response.status_code == 200, response.text
    assert "<svg" in response.text or "empty-state" in response.text
    assert ADMIN_KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("admin", "not-the-key"),
        basic("admin", ""),
        {"authorization": "Basic"},
        {"authorization": "Basic !!not-base64!!"},
        {"authorization": "Basic " + base64.b64encode(ADMIN_KEY.encode()).decode()},  # no colon
        bearer("not-the-key"),
    ],
)
async def test_without_the_key_the_browser_is_asked_for_it(
    policy_file: Path, headers: dict[str, str]
) -> None:
    """No key, a wrong one, or malformed Basic credentials get a 401 whose WWW-Authenticate
    makes a browser prompt for them."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("headers", [bearer(APP_KEY), basic("app1", APP_KEY)])
async def test_a_client_key_is_refused(policy_file: Path, headers: dict[str, str]) -> None:
    """A client key, however sent, gets a 403 on the dashboard (known, not allowed there) and
    no prompt for other credentials."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        response = await client.get("/dashboard", headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/report"),
        ("GET", "/admin/policy"),
        ("POST", "/admin/policy/reload"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/dashboardx"),
    ],
)
async def test_basic_auth_opens_nothing_else(policy_file: Path, method: str, path: str) -> None:
    """HTTP Basic with the admin key is refused on every other route (401, no prompt): only
    the page made for browsers takes it."""
    async with gateway(policy_file, backends=fakes("small", "big"), **KEYS) as (client, _):
        refused = await client.request(method, path, headers=basic("admin", ADMIN_KEY))
        allowed = await client.request(method, path, headers=bearer(ADMIN_KEY))
    assert refused.status_code == 401, refused.text
    assert "www-authenticate" not in refused.headers
    assert allowed.status_code != 401  # the same key as a bearer token is accepted


# --- in a real browser ------------------------------------------------------------------------


def browser_view(base_url: str) -> dict[str, Any]:
    """Load /dashboard in headless Chromium with HTTP Basic credentials; return what the page
    shows (figures, charts with their rendered sizes, bars) and what the browser fetched."""
    from playwright.sync_api import ConsoleMessage, Dialog, sync_playwright
    from playwright.sync_api import Error as PlaywrightError

    requested: list[str] = []
    dialogs: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Without credentials Chromium is challenged and, with nobody to type them in,
            # gives up on the page (an auth prompt it cannot show).
            anonymous = browser.new_context()
            challenges: list[tuple[int, str | None]] = []
            bare = anonymous.new_page()
            bare.on(
                "response",
                lambda answer: challenges.append(
                    (answer.status, answer.headers.get("www-authenticate"))
                ),
            )
            with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                bare.goto(f"{base_url}/dashboard")
            view: dict[str, Any] = {"anonymous": challenges}
            anonymous.close()
            context = browser.new_context(
                http_credentials={"username": "admin", "password": live_server.ADMIN_KEY},
                viewport={"width": 1280, "height": 900},
            )
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("dialog", on_dialog)
            page.on("console", on_console)
            page.on("pageerror", lambda error: page_errors.append(error.message))
            response = page.goto(f"{base_url}/dashboard?since=7d", wait_until="load")
            assert response is not None
            view["status"] = response.status
            view["figures"] = page.locator("[data-field]").evaluate_all(
                "els => els.map(e => [e.dataset.field, e.dataset.value, e.innerText])"
            )
            view["charts"] = page.locator("svg.chart").evaluate_all(
                """els => els.map(e => {
                    const box = e.getBoundingClientRect();
                    return [e.dataset.testid, box.width, box.height,
                            e.querySelector('title').textContent, e.getAttribute('aria-label')];
                })"""
            )
            view["bars"] = page.locator("rect[data-testid=bar]").evaluate_all(
                """els => els.map(e => {
                    const box = e.getBoundingClientRect();
                    return [e.closest('svg').dataset.testid, e.dataset.key, e.dataset.series,
                            e.dataset.value, box.width, box.height];
                })"""
            )
            view["labels"] = page.locator("svg.chart text.cat title").all_text_contents()
            ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACT), full_page=True)
            context.close()
        finally:
            browser.close()
    view["requested"] = requested
    view["dialogs"] = dialogs
    view["console_errors"] = console_errors + page_errors
    return view


def test_the_dashboard_renders_in_headless_chromium(tmp_path: Path, serve: Any) -> None:
    """In Debian's Chromium, against a real `tiergate serve` whose ledger holds sample rows and
    real answered requests: the charts render with their bars, every figure and bar matches
    GET /admin/report, the page fetches nothing else and runs no injected script, and a
    screenshot is kept."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(PRICED_POLICY)
    rows = sample_rows(datetime.now(UTC))
    fill(f"sqlite:///{tmp_path / 'ledger.db'}", rows)
    server: live_server.Server = serve(policy, watch=False)
    for prompt in (live_server.PROMPT, "hi", "Summarise the plot of Hamlet in one line."):
        server.chat(prompt)
    view = browser_view(server.base_url)
    admin = {"authorization": f"Bearer {live_server.ADMIN_KEY}"}
    api = {}
    for by in ("day", "tier", "backend"):
        answer = server.http.get("/admin/report", params={"since": "7d", "by": by}, headers=admin)
        assert answer.status_code == 200, answer.text
        api[by] = answer.json()

    assert view["anonymous"] == [(401, CHALLENGE)]
    assert view["status"] == 200
    totals = api["day"]["totals"]
    assert totals["requests"] == len(rows) + 3
    assert totals["priced_requests"] == len(rows) - 1 + 3  # one sample row unpriced; answers priced
    check_figures([tuple(f) for f in view["figures"]], totals)

    charts = {testid: (width, height, title, label) for testid, width, height, title, label
              in view["charts"]}  # fmt: skip
    assert set(charts) == set(CHARTS)
    for width, height, title, label in charts.values():
        assert width > 100
        assert height > 50
        assert title
        assert title == label
    bars = view["bars"]
    assert drawn_bars(bar[:4] for bar in bars) == expected_bars(api)
    per_chart = Counter(bar[0] for bar in bars)
    assert per_chart["chart-savings"] == 3 * len(api["day"]["groups"]) >= 3 * 5
    assert per_chart["chart-tiers"] == len(api["tier"]["groups"]) >= 4
    assert per_chart["chart-latency"] >= 2 * 3
    for chart, key, series, value, width, height in bars:
        if float(value) != 0:
            assert width > 0, (chart, key, series, value)
            assert height > 0, (chart, key, series, value)

    assert HOSTILE_TIER in view["labels"]
    assert HOSTILE_BACKEND in view["labels"]
    assert view["dialogs"] == []
    assert view["console_errors"] == []
    assert view["requested"]
    assert {url.partition("?")[0] for url in view["requested"]} == {f"{server.base_url}/dashboard"}
    assert ARTIFACT.stat().st_size > 10_000

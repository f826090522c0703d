"""The savings report sums alike rows in the database (``gateway.ledger.report_scan``): each of
many alike rows still counts once, and a day is still a UTC day whatever the database's own
time zone."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.report import build_report
from gateway.ledger.store import insert_batch
from tests.support import postgres
from tests.support.ledger_rows import ledger_entry

D = Decimal
SINCE, UNTIL = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)


def fill(url: str, entries: list[LedgerEntry]) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        insert_batch(engine, entries)
    finally:
        engine.dispose()


def report(url: str, by: str | None = None) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        return build_report(engine, since=SINCE, until=UNTIL, by=by)
    finally:
        engine.dispose()


def rid(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


def test_alike_rows_each_count_once(ledger_url: str) -> None:
    """Three rows alike in every figure's facts (one bucket) and their unlike neighbours: the
    counts, tokens, money and rates are those of the rows one by one, to the last decimal."""
    base = ledger_entry(
        rid(0),
        ts=datetime(2026, 11, 20, 10, tzinfo=UTC),
        tier="cheap",
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=D("0.000000041234"),
        baseline_cost_usd=D("0.001500000001"),
        latency_ms=10.0,
    )
    alike = [dataclasses.replace(base, id=rid(i), latency_ms=10.0 * i) for i in (1, 2, 3)]
    fallback = dataclasses.replace(
        base, id=rid(4), tier="strong", fallback_chain="small>big", attempts=2, latency_ms=99.0
    )
    hit = dataclasses.replace(base, id=rid(5), cache="hit", cost_usd=D(0), latency_ms=1.0)
    failed = dataclasses.replace(base, id=rid(6), status=502, latency_ms=500.0)
    unpriced = dataclasses.replace(base, id=rid(7), cost_usd=None, latency_ms=40.0)
    fill(ledger_url, [*alike, fallback, hit, failed, unpriced])

    result = report(ledger_url, by="tier")
    totals = result["totals"]
    assert totals["requests"] == 7
    assert totals["prompt_tokens"] == 700
    # priced: all but the unpriced one; 5 at 0.000000041234 and the cache hit at 0
    assert totals["priced_requests"] == 6
    assert totals["unpriced_requests"] == 1
    assert totals["cost_usd"] == 0.00000020617
    assert totals["baseline_cost_usd"] == 0.009000000006
    assert totals["savings_usd"] == 0.008999793836
    assert totals["fallback_rate"] == round(1 / 7, 4)
    assert totals["error_rate"] == round(1 / 7, 4)
    assert totals["cache_hit_rate"] == round(1 / 7, 4)
    # answered latencies: 10 20 30 99 1 40 -> 1 10 20 30 40 99; p50 rank 3, p95 rank 6
    assert (totals["latency_ms_p50"], totals["latency_ms_p95"]) == (20.0, 99.0)
    groups = {g["key"]: g for g in result["groups"]}
    assert groups["cheap"]["requests"] == 6
    assert groups["strong"]["requests"] == 1
    assert groups["strong"]["fallback_rate"] == 1.0


@pytest.fixture
def far_east_ledger(pg_cluster: postgres.Cluster) -> Iterator[str]:
    """A PostgreSQL ledger whose sessions run at UTC+14 (``timezone`` set on the database)."""
    with postgres.database(pg_cluster) as url:
        name = make_url(url).database
        with psycopg.connect(pg_cluster.admin_dsn(), autocommit=True) as connection:
            connection.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Pacific/Kiritimati'")
        yield url


def test_a_day_is_a_utc_day_whatever_the_database_time_zone(far_east_ledger: str) -> None:
    """By day, a request at 20 November 12:00 UTC is on the 20th, and one at 21 November
    09:30 UTC on the 21st, although in the session's zone (UTC+14) they fall on the 21st and
    the 21st at 23:30: the report cuts days at UTC midnight, as it says."""
    fill(
        far_east_ledger,
        [
            ledger_entry(rid(1), ts=datetime(2026, 11, 20, 12, tzinfo=UTC), cost_usd=D(1)),
            ledger_entry(rid(2), ts=datetime(2026, 11, 21, 9, 30, tzinfo=UTC), cost_usd=D(2)),
        ],
    )
    days = {g["key"]: g["cost_usd"] for g in report(far_east_ledger, by="day")["groups"]}
    assert days == {"2026-11-20": 1.0, "2026-11-21": 2.0}


def test_a_cascade_escalation_is_no_fallback(ledger_url: str) -> None:
    """A cascade that passed an unsure cheap answer up a tier moved its request to another
    backend without any failure: the fallback rate does not count it (as the answer's
    ``x-tiergate-fallbacks`` does not), unless a try of it also failed over (before, every
    escalation counted as a fallback, so a cascading tier read as an unreliable one)."""
    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    rows = [
        ("cheap>strong", "escalated", False),  # unsure, escalated; nothing failed
        ("cheap>cheap>strong", "escalated", False),  # a retry, then the escalation
        ("cheap>strong>strong2", "escalated", True),  # strong failed: strong2 answered
        ("cheap>cheap2>strong", "escalated", True),  # cheap failed over before the judging
        ("cheap>strong", None, True),  # no cascade: cheap failed, strong answered
        ("cheap>strong", "unescalated", True),  # the escalation failed: back to cheap
    ]
    fill(
        ledger_url,
        [
            ledger_entry(rid(i), ts=at, fallback_chain=chain, cascade=cascade, tier=f"t{i}")
            for i, (chain, cascade, _) in enumerate(rows)
        ],
    )
    result = report(ledger_url, by="tier")
    rates = {g["key"]: g["fallback_rate"] for g in result["groups"]}
    assert rates == {f"t{i}": 1.0 if fell else 0.0 for i, (_, _, fell) in enumerate(rows)}
    assert result["totals"]["fallback_rate"] == round(4 / 6, 4)

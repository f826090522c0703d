"""The savings report reads whole hours from the hourly rollup and whole days' latencies from the
daily histograms (migration 0014's trigger keeps both), and the window's partial edges from the
rows: every figure is the one the rows give, to the last decimal, for every grouping, team and
edge; past ``EXACT_LIMIT`` answered requests the percentiles are within 1% of the exact ones;
rows deleted (or, on PostgreSQL, truncated) leave the rollups as well."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, text

import gateway.ledger.report as report_module
from gateway.ledger.db import downgrade, make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import RequestRow
from gateway.ledger.percentiles import MAX_RELATIVE_ERROR
from gateway.ledger.report import (
    GROUPINGS,
    build_report,
    build_reports,
    known_teams,
    ledger_teams,
)
from gateway.ledger.report_window import EXACT_LIMIT
from gateway.ledger.store import insert_batch
from tests.support import postgres
from tests.support.ledger_rows import ledger_entry

START = datetime(2026, 11, 20, tzinfo=UTC)
# The columns code at 0010 writes (0013 added ``baseline_model``; the rest are not columns).
OLD_COLUMNS = {c.name for c in RequestRow.__table__.columns} - {"baseline_model"}
PERCENTILES = ("latency_ms_p50", "latency_ms_p95", "ttft_ms_p50")
# Windows: whole days; partial edge hours; edges inside one day; inside one hour.
WINDOWS = (
    (START, START + timedelta(days=3)),
    (START + timedelta(hours=5, minutes=17), START + timedelta(days=2, hours=20, minutes=41)),
    (START + timedelta(hours=1, seconds=1), START + timedelta(hours=23, minutes=59)),
    (START + timedelta(days=1, hours=3, minutes=5), START + timedelta(days=1, hours=3, minutes=55)),
)


def entries(n: int, offset: int = 0, seed: int = 3) -> list[LedgerEntry]:
    """``n`` requests over three days, unlike in every fact a figure or grouping depends on."""
    rng = random.Random(seed)
    out = []
    for i in range(offset, offset + n):
        cost = None if i % 23 == 0 else Decimal(rng.randint(0, 10**9)) / 10**12
        out.append(
            ledger_entry(
                f"00000000-0000-7000-8000-{i:012d}",
                ts=START + timedelta(seconds=rng.randrange(3 * 86400), microseconds=i % 997),
                key_id=f"k{i % 5}",
                team=rng.choice((None, "red", "blue")),
                route=rng.choice(("auto", "code")),
                tier=rng.choice(("cheap", "strong")),
                backend=rng.choice(("small", "big")),
                model=rng.choice(("m1", "m2")),
                cost_source=rng.choice(("policy", "hardware", "cache")),
                capabilities=rng.choice(("", "tools", "tools,json")),
                canary_arm=rng.choice((None, None, None, "stable", "shadow", "label-judge")),
                api=rng.choice((None, "chat", "messages")),
                status=rng.choice((200, 200, 200, 200, 502, 499)),
                fallback_chain=rng.choice(("small", "small>big", "small>small")),
                cascade=rng.choice((None, "kept", "escalated")),
                cache=rng.choice(("miss", "miss", "hit")),
                prompt_tokens=rng.randint(0, 3000),
                completion_tokens=rng.randint(0, 900),
                cached_tokens=rng.randint(0, 50),
                usage_estimated=i % 11 == 0,
                latency_ms=0.0 if i % 41 == 0 else rng.uniform(0.5, 9000),
                ttft_ms=None if i % 3 == 0 else rng.uniform(0.2, 400),
                cost_usd=cost,
                baseline_cost_usd=None if i % 7 == 0 else Decimal(rng.randint(0, 10**10)) / 10**12,
                baseline_model=rng.choice((None, "gpt-4o")),
            )
        )
    return out


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[tuple[str, Engine]]:
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        yield ledger_url, engine
    finally:
        engine.dispose()


def reports(engine: Engine, shapes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [build_report(engine, **shape) for shape in shapes]


def drop_trigger(engine: Engine) -> None:
    """The ledger as if it had no rollups: every report reads the rows."""
    on = "" if engine.dialect.name == "sqlite" else " ON ledger_requests"
    with engine.begin() as connection:
        connection.execute(text(f"DROP TRIGGER ledger_rollup_insert{on}"))


def shapes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for since, until in WINDOWS:
        for by in (None, *GROUPINGS):
            out.append({"since": since, "until": until, "by": by})
        out.append({"since": since, "until": until, "team": "red", "by": "tier"})
        out.append({"since": since, "until": until, "team": "blue", "by": "day"})
    return out


def test_rollup_figures_equal_the_rows(ledger: tuple[str, Engine]) -> None:
    """Every grouping, both teams, whole days, partial edge hours, a window inside one hour:
    the report from the rollups is the report from the rows, every figure equal; so are the
    teams the dashboard's selector and ``/admin/report?team=`` know."""
    _url, engine = ledger
    insert_batch(engine, entries(1500))
    insert_batch(engine, entries(300, offset=0))  # a replay: skipped rows add nothing
    asked = shapes()
    rolled = reports(engine, asked)
    # The last minutes hold a row or two: a team or none, from the rows before the last hour.
    last = [START + timedelta(days=2, hours=23, minutes=m, seconds=30) for m in (0, 57, 59)]
    moments = [since for since, _until in WINDOWS] + last
    rolled_teams = [ledger_teams(engine, m) for m in moments] + [known_teams(engine)]
    drop_trigger(engine)
    rows = reports(engine, asked)
    assert rolled_teams == [ledger_teams(engine, m) for m in moments] + [known_teams(engine)]
    for shape, a, b in zip(asked, rolled, rows, strict=True):
        assert a["totals"]["requests"] > 0, shape
        assert a["percentiles"] == {"method": "nearest-rank", "max_relative_error": 0.0}
        assert a == b, shape


ROLLUPS = ("ledger_rollup_hourly", "ledger_latency_daily")


def rollup_counts(engine: Engine) -> dict[str, tuple[int, int]]:
    """Each rollup table's (rows, rows whose count is 0 or less)."""
    with engine.connect() as connection:
        return {
            table: (
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one(),
                connection.execute(
                    text(f"SELECT count(*) FROM {table} WHERE requests <= 0")
                ).scalar_one(),
            )
            for table in ROLLUPS
        }


def delete_some(engine: Engine) -> None:
    """An operator's deletes: one team's rows; a time range across hour edges (and a day's);
    a range inside one hour; each its own statement and transaction."""
    ts = RequestRow.ts
    for where in (
        RequestRow.team == "blue",
        (ts >= START + timedelta(hours=5, minutes=17))
        & (ts < START + timedelta(hours=26, minutes=3)),
        (ts >= START + timedelta(days=2, hours=3, minutes=10))
        & (ts < START + timedelta(days=2, hours=3, minutes=40)),
    ):
        with engine.begin() as connection:
            assert connection.execute(delete(RequestRow).where(where)).rowcount > 0
    with engine.begin() as connection:  # and a few rows one at a time
        for i in range(1400, 1420):
            connection.execute(
                delete(RequestRow).where(RequestRow.id == f"00000000-0000-7000-8000-{i:012d}")
            )


def test_deleted_rows_leave_the_rollups(ledger: tuple[str, Engine]) -> None:
    """Rows deleted by team, by a time range across hour edges and inside one hour: the report
    from the rollups is the remaining rows' report for every grouping and window (before, the
    whole hours still counted the deleted rows and the edges did not), and no rollup row or
    histogram bin is left at a count of 0."""
    _url, engine = ledger
    insert_batch(engine, entries(1500))
    delete_some(engine)
    asked = shapes()
    rolled = reports(engine, asked)
    counts = rollup_counts(engine)
    drop_trigger(engine)
    assert all(zero == 0 and rows > 0 for rows, zero in counts.values()), counts
    for shape, a, b in zip(asked, rolled, reports(engine, asked), strict=True):
        assert a == b, shape


def test_deleting_every_row_empties_the_rollups(ledger: tuple[str, Engine]) -> None:
    """A ledger whose rows are all deleted has empty rollups; rows written after count alone."""
    _url, engine = ledger
    insert_batch(engine, entries(600))
    with engine.begin() as connection:
        connection.execute(delete(RequestRow))
    assert rollup_counts(engine) == dict.fromkeys(ROLLUPS, (0, 0))
    insert_batch(engine, entries(300, offset=600, seed=9))
    asked = shapes()[: len(GROUPINGS) + 3]
    rolled = reports(engine, asked)
    drop_trigger(engine)
    assert rolled == reports(engine, asked)


def test_truncate_empties_the_rollups(pg_cluster: postgres.Cluster) -> None:
    """PostgreSQL's TRUNCATE of the ledger (no row triggers fire) empties both rollup tables."""
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            insert_batch(engine, entries(600))
            with engine.begin() as connection:
                connection.execute(text("TRUNCATE ledger_requests"))
            assert rollup_counts(engine) == dict.fromkeys(ROLLUPS, (0, 0))
            insert_batch(engine, entries(300, offset=600, seed=9))
            asked = shapes()[: len(GROUPINGS) + 3]
            rolled = reports(engine, asked)
            drop_trigger(engine)
            assert rolled == reports(engine, asked)
        finally:
            engine.dispose()


def test_downgrade_and_upgrade_again(ledger: tuple[str, Engine]) -> None:
    """``tiergate db downgrade 0013`` drops the rollups with every trigger and function, and
    ``upgrade`` makes them again: the rollups are summed anew and follow deletes."""
    url, engine = ledger
    insert_batch(engine, entries(800))
    downgrade(url, "0013")
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            left = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'ledger%'"
        else:
            left = (
                "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'ledger%' UNION ALL "
                "SELECT proname FROM pg_proc WHERE proname LIKE 'ledger_rollup%'"
            )
        assert connection.execute(text(left)).all() == []
    upgrade(url)
    delete_some(engine)
    asked = shapes()
    rolled = reports(engine, asked)
    drop_trigger(engine)
    assert rolled == reports(engine, asked)


def test_rows_before_the_migration_are_summed(ledger_url: str) -> None:
    """A ledger written before 0014 is backfilled by the migration; rows written after it (by
    this or an older image: the trigger) join them, and the report is the rows' report."""
    upgrade(ledger_url, "0013")
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, entries(400))
        upgrade(ledger_url)
        insert_batch(engine, entries(400, offset=400, seed=5))
        asked = shapes()[: len(GROUPINGS) + 3]
        rolled = reports(engine, asked)
        drop_trigger(engine)
        assert rolled == reports(engine, asked)
    finally:
        engine.dispose()


def test_many_answered_requests_give_percentiles_within_the_bound(
    ledger: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``EXACT_LIMIT`` answered requests, the percentiles come from the histograms: each
    within 1% of the exact nearest-rank value, the report says so, and every other figure is
    still exact (a report by key reads the rows: exact)."""
    _url, engine = ledger
    insert_batch(engine, entries(1500))
    asked = shapes()
    monkeypatch.setattr(report_module, "EXACT_LIMIT", 0)
    rolled = reports(engine, asked)
    drop_trigger(engine)
    rows = reports(engine, asked)
    checked = 0
    for shape, a, b in zip(asked, rolled, rows, strict=True):
        bound = 0.0 if shape["by"] == "key" else 0.01  # by key: from the rows, exact
        assert a["percentiles"] == {"method": "nearest-rank", "max_relative_error": bound}
        assert b["percentiles"]["max_relative_error"] == 0.0
        for approx, exact in zip(
            [a["totals"], *a["groups"]], [b["totals"], *b["groups"]], strict=True
        ):
            for name in PERCENTILES:
                if exact[name] is None:
                    assert approx[name] is None, shape
                    continue
                assert abs(approx[name] - exact[name]) <= MAX_RELATIVE_ERROR * exact[name] + 1e-3
                checked += 1
            other = {k: v for k, v in approx.items() if k not in PERCENTILES}
            assert other == {k: v for k, v in exact.items() if k not in PERCENTILES}, shape
    assert checked > 500


def test_an_older_images_rows_count(ledger: tuple[str, Engine]) -> None:
    """Rows an older image inserts (code at 0010: no ``baseline_model`` column in its INSERT)
    fire the trigger as well: a report of a ledger it shares is still the rows' report."""
    _url, engine = ledger
    old = [
        {k: v for k, v in dataclasses.asdict(e).items() if k in OLD_COLUMNS}
        for e in entries(300, seed=11)
    ]
    with engine.begin() as connection:
        connection.execute(insert(RequestRow), old)
    insert_batch(engine, entries(300, offset=300, seed=12))
    asked = shapes()[: len(GROUPINGS) + 3]
    rolled = reports(engine, asked)
    drop_trigger(engine)
    assert rolled == reports(engine, asked)


@pytest.mark.parametrize("limit", [EXACT_LIMIT, 0])
def test_several_groupings_in_one_read_equal_one_at_a_time(
    ledger: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """``build_reports`` (the dashboard's three groupings from one read of the ledger) gives
    each grouping's report as ``build_report`` alone does, from the rollups and from the
    rows, with exact and with histogram percentiles (``limit``)."""
    _url, engine = ledger
    insert_batch(engine, entries(1200))
    monkeypatch.setattr(report_module, "EXACT_LIMIT", limit)
    bys: tuple[str | None, ...] = ("day", "tier", None, "backend", "capability")
    if limit:
        bys = (*bys, "key")  # read from the rows, with the others: exact percentiles alike
    for since, until in WINDOWS[:2]:
        for team in (None, "red"):
            together = build_reports(engine, since=since, until=until, bys=bys, team=team)
            alone = [build_report(engine, since=since, until=until, by=by, team=team) for by in bys]
            assert together == alone
    drop_trigger(engine)
    since, until = WINDOWS[1]
    together = build_reports(engine, since=since, until=until, bys=bys)
    assert together == [build_report(engine, since=since, until=until, by=by) for by in bys]


WRITERS = 4


def busy_hour(writer: int, batch: int, size: int) -> list[LedgerEntry]:
    """One batch of the current hour, as replicas write it: a dozen rollup rows (team, tier,
    backend) and a few latency bins, every batch adding to all of them, in its own order."""
    rng = random.Random(writer * 1000 + batch)
    rows = [
        ledger_entry(
            f"00000000-0000-7000-{writer:04d}-{batch * size + i:012d}",
            ts=START + timedelta(seconds=rng.randrange(3600)),
            team=("red", "blue", None)[i % 3],
            tier=("cheap", "strong")[i // 3 % 2],
            backend=("small", "big")[i // 6 % 2],
            status=200 if i % 13 else 502,
            latency_ms=(40.0, 90.0, 250.0)[i % 3],
            ttft_ms=(5.0, 12.0)[i % 2],
            prompt_tokens=rng.randint(0, 3000),
            cost_usd=Decimal(rng.randint(0, 10**9)) / 10**12,
        )
        for i in range(size)
    ]
    rng.shuffle(rows)
    return rows


def race(
    replicas: list[Engine], batches: int, step: Callable[[Engine, int, int], None]
) -> list[str]:
    """Each replica (a thread with its own engine) runs ``step(engine, replica, batch)`` for its
    batches, all starting at once; every failure is reported, not the first alone."""
    start = threading.Barrier(len(replicas))
    failures: list[str] = []

    def run(writer: int) -> None:
        start.wait()
        for batch in range(batches):
            try:
                step(replicas[writer], writer, batch)
            except Exception as exc:
                failures.append(f"writer {writer} batch {batch}: {exc}")

    threads = [threading.Thread(target=run, args=(w,)) for w in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def assert_rollups_are_the_rows(engine: Engine, requests: int) -> None:
    """The hourly rollup counts ``requests``, and reports from the rollups equal the rows'."""
    with engine.connect() as connection:
        counted = connection.execute(
            text("SELECT sum(requests) FROM ledger_rollup_hourly")
        ).scalar_one()
    assert counted == requests
    asked = shapes()[: len(GROUPINGS) + 3]
    rolled = reports(engine, asked)
    drop_trigger(engine)
    assert rolled == reports(engine, asked)


def test_concurrent_writers_never_deadlock(pg_db: str) -> None:
    """Several replicas insert batches at once into one PostgreSQL ledger, each batch adding to
    the same rollup rows in a different order: no batch fails (a row-level trigger deadlocked
    here: each batch locked the rollup rows in its own order), and the rollups are the rows'."""
    upgrade(pg_db)
    engine = make_engine(pg_db)
    replicas = [make_engine(pg_db) for _ in range(WRITERS)]  # a pool each, as replicas have

    def step(replica: Engine, writer: int, batch: int) -> None:
        insert_batch(replica, busy_hour(writer, batch, 120))

    try:
        assert race(replicas, 25, step) == []
        assert_rollups_are_the_rows(engine, WRITERS * 25 * 120)
    finally:
        for each in (engine, *replicas):
            each.dispose()


def test_concurrent_deletes_and_inserts_never_deadlock(pg_db: str) -> None:
    """Several replicas at once insert a batch of one hour, then delete their previous batch
    (each statement subtracting from the same rollup rows, in its own order of rows): no
    statement fails (each takes the rollup rows' locks in key order), and the rollups are the
    remaining rows'."""
    upgrade(pg_db)
    engine = make_engine(pg_db)
    replicas = [make_engine(pg_db) for _ in range(WRITERS)]

    def step(replica: Engine, writer: int, batch: int) -> None:
        rows = busy_hour(writer, batch, 120)
        insert_batch(replica, rows)
        if batch % 3:  # every third batch stays
            with replica.begin() as connection:
                ids = [row.id for row in rows]
                connection.execute(delete(RequestRow).where(RequestRow.id.in_(ids)))

    try:
        assert race(replicas, 15, step) == []
        assert_rollups_are_the_rows(engine, WRITERS * 5 * 120)
    finally:
        for each in (engine, *replicas):
            each.dispose()

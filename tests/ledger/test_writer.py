"""The ledger writer: batched inserts off the request path, idempotent by request id, a local
outbox while the database is unreachable (replayed without duplicates once it is back), a
drained queue on close, and no blocking or dropping when the queue is full."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog.testing
from sqlalchemy import Engine, event, select
from sqlalchemy.engine import make_url

from gateway.ids import request_id
from gateway.ledger.db import is_sqlite, make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import RequestRow
from gateway.ledger.outbox import Outbox
from gateway.ledger.schema_compat import SchemaState, SchemaVerdict
from gateway.ledger.store import insert_batch
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from tests.support.tcp_proxy import TcpProxy

TEMPLATE = LedgerEntry(
    id="",
    ts=datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
    key_id="team-a",
    policy_hash="0123456789abcdef",
    route="auto",
    tier="cheap",
    backend="small",
    model="small-model",
    score=0.125,
    cache="off",
    canary_arm=None,
    status=200,
    error_class=None,
    attempts=1,
    fallback_chain="small",
    stream=False,
    prompt_tokens=12,
    completion_tokens=7,
    cached_tokens=0,
    usage_estimated=False,
    latency_ms=41.5,
    ttft_ms=None,
    server_ms=38.25,
    load_ms=None,
    cost_usd=Decimal("0.0000015"),
    cost_source="policy",
    baseline_cost_usd=Decimal("0.0000425"),
)


def entry(**changes: Any) -> LedgerEntry:
    """A ledger entry with a fresh UUIDv7 id (or the given one)."""
    return dataclasses.replace(TEMPLATE, **{"id": request_id(), **changes})


def entries(n: int) -> list[LedgerEntry]:
    return [entry() for _ in range(n)]


def stored_ids(url: str) -> list[str]:
    """Every id in the ledger, duplicates included (read directly, never through a proxy)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(RequestRow.id)).scalars())
    finally:
        engine.dispose()


def stored_rows(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(*RequestRow.__table__.columns)).all())
    finally:
        engine.dispose()


async def until(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within_s`` seconds saying ``what``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def count_inserts(engine: Engine) -> list[int]:
    """Count the writes the writer makes: each batch takes one connection from the engine's
    pool (whatever way it then inserts), seen through SQLAlchemy's public pool events."""
    calls: list[int] = []

    @event.listens_for(engine, "checkout")
    def _seen(*_args: Any) -> None:
        calls.append(1)

    return calls


@contextlib.asynccontextmanager
async def running(
    url: str, outbox_path: Path, **options: Any
) -> AsyncIterator[tuple[LedgerWriter, Metrics]]:
    """A started writer on ``url`` with its own metrics; closed (drained) at the end."""
    engine = make_engine(url)
    outbox = Outbox(outbox_path)
    metrics = Metrics()
    writer = LedgerWriter(engine, outbox, metrics, **options)
    writer.start()
    try:
        yield writer, metrics
    finally:
        await writer.aclose()
        outbox.close()
        engine.dispose()


@pytest.fixture
def url(ledger_url: str) -> str:
    """The ledger database, migrated to head."""
    upgrade(ledger_url)
    return ledger_url


# --- batching, idempotence ------------------------------------------------------------------


async def test_a_burst_is_written_in_batches(url: str, tmp_path: Path) -> None:
    """2,000 rows recorded at once all land, once each, in at most ceil(2000 / batch) inserts."""
    burst = entries(2000)
    async with running(url, tmp_path / "outbox.db", batch_size=500) as (writer, metrics):
        inserts = count_inserts(writer.engine)
        for item in burst:
            writer.record(item)
        await writer.flush()
        assert sample(metrics, "tiergate_ledger_rows_total", dest="db") == 2000
        assert sample(metrics, "tiergate_ledger_queue_rows") == 0
    ids = stored_ids(url)
    assert sorted(ids) == sorted(e.id for e in burst)
    assert 1 <= len(inserts) <= math.ceil(2000 / 500)
    assert writer.outbox.size == 0


async def test_every_field_round_trips(url: str, tmp_path: Path) -> None:
    """A row reads back with the values it was recorded with (money exact to the column's
    scale, the time in UTC)."""
    item = entry(
        ttft_ms=12.75,
        load_ms=3.5,
        canary_arm="b",
        stream=True,
        status=499,
        error_class="client_closed",
        usage_estimated=True,
        cost_usd=None,
        cost_source="unpriced",
    )
    async with running(url, tmp_path / "outbox.db") as (writer, _):
        writer.record(item)
        await writer.flush()
    (row,) = stored_rows(url)
    ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)  # SQLite keeps naive UTC
    assert ts == item.ts
    for name in ("key_id", "policy_hash", "route", "tier", "backend", "model", "score", "cache"):
        assert getattr(row, name) == getattr(item, name), name
    for name in ("canary_arm", "status", "error_class", "attempts", "fallback_chain", "stream"):
        assert getattr(row, name) == getattr(item, name), name
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "usage_estimated"):
        assert getattr(row, name) == getattr(item, name), name
    for name in ("latency_ms", "ttft_ms", "server_ms", "load_ms", "cost_source"):
        assert getattr(row, name) == getattr(item, name), name
    assert row.cost_usd is None
    assert row.baseline_cost_usd == item.baseline_cost_usd


async def test_recording_an_id_twice_keeps_one_row(url: str, tmp_path: Path) -> None:
    """The same id recorded twice in one batch, and again in a later batch, is one row."""
    item = entry()
    async with running(url, tmp_path / "outbox.db") as (writer, _):
        writer.record(item)
        writer.record(item)
        await writer.flush()
        writer.record(dataclasses.replace(item, status=502))
        await writer.flush()
    assert stored_ids(url) == [item.id]
    (row,) = stored_rows(url)
    assert row.status == 200  # the first write wins; a replay never rewrites a row


async def test_overlong_text_does_not_poison_the_ledger(url: str, tmp_path: Path) -> None:
    """A row whose text is longer than its column (a 300-character model name from an upstream,
    a long key id) is stored, cut to the column, rather than failing its whole batch forever."""
    long_model = "m" * 300
    odd, normal = entry(model=long_model, key_id="k" * 100), entry()
    async with running(url, tmp_path / "outbox.db", retry_s=0.05) as (writer, _):
        writer.record(odd)
        writer.record(normal)
        await writer.flush()
        assert writer.outbox.size == 0
    rows = {r.id: r for r in stored_rows(url)}
    assert set(rows) == {odd.id, normal.id}
    assert long_model.startswith(rows[odd.id].model)
    assert len(rows[odd.id].model) <= 256


# --- the database goes away and comes back --------------------------------------------------


class Fault(Protocol):
    url: str

    async def cut(self) -> None: ...

    async def restore(self) -> None: ...


class VanishingSqlite:
    """A SQLite ledger whose directory disappears (an unmounted volume) and comes back."""

    def __init__(self, root: Path) -> None:
        self.volume = root / "volume"
        self.url = f"sqlite:///{self.volume / 'ledger.db'}"
        self.engine: Engine | None = None  # the writer's: its open connections must go too

    async def cut(self) -> None:
        self.volume.rename(self.volume.with_name("volume.away"))
        assert self.engine is not None
        self.engine.dispose()

    async def restore(self) -> None:
        self.volume.with_name("volume.away").rename(self.volume)


class CutPostgres:
    """PostgreSQL reached through a TCP proxy that the test cuts and restores."""

    def __init__(self, direct_url: str, proxy: TcpProxy) -> None:
        self.url = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
        self.proxy = proxy

    async def cut(self) -> None:
        await self.proxy.cut()

    async def restore(self) -> None:
        await self.proxy.restore()


@contextlib.asynccontextmanager
async def faulty(ledger_url: str, tmp_path: Path) -> AsyncIterator[tuple[Fault, str]]:
    """A way to make the ledger database unreachable, and the URL to read it directly."""
    if is_sqlite(ledger_url):
        fault = VanishingSqlite(tmp_path)
        fault.volume.mkdir()
        upgrade(fault.url)
        yield fault, fault.url
        return
    upgrade(ledger_url)
    direct = make_url(ledger_url)
    async with TcpProxy(str(direct.host), int(direct.port or 5432)) as proxy:
        yield CutPostgres(ledger_url, proxy), ledger_url


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == name]


async def test_unreachable_database_fills_the_outbox_then_replays_it(
    ledger_url: str, tmp_path: Path
) -> None:
    """While the database is unreachable rows go to the outbox (and say so in the log and the
    metrics); once it is back the outbox is replayed and emptied, one row per id."""
    before, during, after = entries(40), entries(60), entries(25)
    async with faulty(ledger_url, tmp_path) as (fault, direct_url):
        with structlog.testing.capture_logs() as logs:
            async with running(fault.url, tmp_path / "outbox.db", retry_s=0.05) as (
                writer,
                metrics,
            ):
                if isinstance(fault, VanishingSqlite):
                    fault.engine = writer.engine
                for item in before:
                    writer.record(item)
                await writer.flush()
                assert writer.outbox.size == 0

                await fault.cut()
                for item in during:
                    writer.record(item)
                await writer.flush()  # written somewhere safe: the outbox
                assert writer.outbox.size == len(during)
                assert sample(metrics, "tiergate_ledger_outbox_rows") == len(during)
                assert sample(metrics, "tiergate_ledger_rows_total", dest="outbox") == len(during)
                assert sample(metrics, "tiergate_ledger_write_errors_total") >= 1
                (down,) = events(logs, "ledger_db_unreachable")  # once, not once per retry
                assert down["outbox"] == str(tmp_path / "outbox.db")

                await fault.restore()
                await until(lambda: writer.outbox.size == 0, "the outbox to be replayed")
                for item in after:
                    writer.record(item)
                await writer.flush()
                assert sample(metrics, "tiergate_ledger_rows_total", dest="replayed") == len(during)
                assert sample(metrics, "tiergate_ledger_outbox_rows") == 0
        assert events(logs, "ledger_db_reachable")
        ids = await asyncio.to_thread(stored_ids, direct_url)
    assert len(ids) == len(set(ids))
    assert set(ids) == {e.id for e in before + during + after}


async def test_replay_skips_rows_already_in_the_database(url: str, tmp_path: Path) -> None:
    """An outbox holding rows the database already has (written just before a crash) replays
    into exactly one row per id and empties."""
    written, pending = entries(30), entries(20)
    engine = make_engine(url)
    try:
        insert_batch(engine, written)
    finally:
        engine.dispose()
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put(written[:10] + pending)
    outbox.close()
    async with running(url, tmp_path / "outbox.db", retry_s=0.05) as (writer, metrics):
        assert writer.outbox.size == 30
        await until(lambda: writer.outbox.size == 0, "the outbox to be replayed")
        assert sample(metrics, "tiergate_ledger_rows_total", dest="replayed") == 30
    ids = stored_ids(url)
    assert len(ids) == len(set(ids))
    assert set(ids) == {e.id for e in written + pending}


async def test_the_outbox_survives_a_restart(ledger_url: str, tmp_path: Path) -> None:
    """Rows left in the outbox when the writer stops (database still down) are replayed by the
    next writer once the database answers."""
    pending = entries(15)
    async with faulty(ledger_url, tmp_path) as (fault, direct_url):
        async with running(fault.url, tmp_path / "outbox.db", retry_s=0.05) as (writer, _):
            if isinstance(fault, VanishingSqlite):
                fault.engine = writer.engine
            writer.record(entry())  # opens a connection, so the cut also breaks a live one
            await writer.flush()
            await fault.cut()
            for item in pending:
                writer.record(item)
        assert writer.outbox.size == len(pending)  # aclose() drained the queue to the outbox
        await fault.restore()
        async with running(fault.url, tmp_path / "outbox.db", retry_s=0.05) as (writer, _):
            await until(lambda: writer.outbox.size == 0, "the outbox to be replayed")
        ids = await asyncio.to_thread(stored_ids, direct_url)
    assert len(ids) == len(set(ids)) == len(pending) + 1
    assert {e.id for e in pending} <= set(ids)


# --- closing, overload ----------------------------------------------------------------------


async def test_aclose_drains_the_queue(url: str, tmp_path: Path) -> None:
    """Rows recorded just before ``aclose()`` are all written when it returns."""
    last = entries(1200)
    async with running(url, tmp_path / "outbox.db", batch_size=100) as (writer, _):
        for item in last:
            writer.record(item)
        assert writer.queue_depth == len(last)
    assert writer.queue_depth == 0
    assert sorted(stored_ids(url)) == sorted(e.id for e in last)


async def test_a_full_queue_neither_blocks_nor_drops(url: str, tmp_path: Path) -> None:
    """Past the queue's size ``record()`` still returns at once, warns once, and every row is
    written."""
    burst = entries(250)
    with structlog.testing.capture_logs() as logs:
        async with running(url, tmp_path / "outbox.db", queue_size=10, batch_size=7) as (
            writer,
            metrics,
        ):
            for item in burst:
                writer.record(item)  # synchronous: returning at all means it did not block
            assert writer.queue_depth == len(burst)
            await writer.flush()
            assert sample(metrics, "tiergate_ledger_rows_total", dest="db") == len(burst)
    assert len(events(logs, "ledger_queue_full")) == 1
    ids = stored_ids(url)
    assert sorted(ids) == sorted(e.id for e in burst)


async def test_a_schema_check_that_breaks_keeps_the_rows(url: str, tmp_path: Path) -> None:
    """A start the database did not answer leaves the schema to be checked later; a check that
    then fails with something other than a database error (a broken migration's RuntimeError,
    Alembic's CommandError) holds the batch in the outbox like an unusable schema, and it is
    written once a check passes (before, the batch was neither inserted nor put in the outbox:
    only the journal, if on, still had it)."""
    fixed = False

    def check() -> SchemaState:
        if not fixed:
            raise RuntimeError("the migration has no math functions")
        return SchemaState(SchemaVerdict.AT_HEAD, "head", "head")

    rows = entries(3)
    with structlog.testing.capture_logs() as logs:
        async with running(url, tmp_path / "outbox.db", schema_check=check, retry_s=0.05) as (
            writer,
            _metrics,
        ):
            for item in rows:
                writer.record(item)
            await until(lambda: writer.outbox.size == 3, "the rows waiting in the outbox")
            assert stored_ids(url) == []
            fixed = True
            await until(lambda: writer.outbox.size == 0, "the outbox to drain")
    assert sorted(stored_ids(url)) == sorted(e.id for e in rows)
    assert "ledger_schema_check_failed" in [e["event"] for e in logs]

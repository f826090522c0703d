"""The ledger under faults: the database going away while requests flow, SIGTERM under load,
and a restart with rows left in the outbox. Each runs on SQLite and on PostgreSQL; the promise
checked is the same every time: one row per request answered, none missing, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from structlog.testing import capture_logs

from gateway.ledger.db import is_sqlite, make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import RequestRow
from gateway.ledger.outbox import Outbox
from gateway.ledger.store import insert_batch
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from tests.http.helpers import gateway
from tests.http.live_server import API_KEY, WAIT_S, Server
from tests.support.loadgen import Load
from tests.support.tcp_proxy import TcpProxy

# Two fake backends that take a few milliseconds (so requests overlap), one priced and one not;
# the big one streams slowly enough that a SIGTERM finds streams half sent.
POLICY = """
version: 1
backends:
  small:
    type: fake
    model: small-model
    script: [{reply: "a short answer from the small model", delay_ms: 5}]
  big:
    type: fake
    model: big-model
    tokens_per_second: 60
    script: [{reply: "a longer answer that the big model sends a word at a time", delay_ms: 5}]
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
pricing:
  backends:
    small: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}
"""
CLIENTS = 8


# --- reading the ledger -------------------------------------------------------------------------


def ledger_rows(url: str) -> list[tuple[str, int]]:
    """(id, status) of every row in the ledger at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(RequestRow.id, RequestRow.status)).all()
        return [(str(rid), int(status)) for rid, status in rows]
    finally:
        engine.dispose()


def outbox_rows(path: Path) -> int:
    """Rows waiting in the outbox file (0 when there is none)."""
    if not path.exists():
        return 0
    connection = sqlite3.connect(path)
    try:
        (count,) = connection.execute("SELECT count(*) FROM outbox").fetchone()
        return int(count)
    finally:
        connection.close()


def outbox_entries(path: Path) -> dict[str, int]:
    """id → status of the rows waiting in the outbox file."""
    if not path.exists():
        return {}
    box = Outbox(path)
    try:
        return {entry.id: entry.status for entry in box.peek(1_000_000)}
    finally:
        box.close()


def numbers(**figures: object) -> None:
    """The run's figures, in the test's output (``pytest -rP`` shows them)."""
    print("figures:", ", ".join(f"{name}={value}" for name, value in figures.items()))


# --- taking the database away -------------------------------------------------------------------


class Outage(Protocol):
    url: str  # the URL the gateway is given: the database, as the outage can reach it

    async def cut(self) -> None: ...

    async def restore(self) -> None: ...


class LedgerLock:
    """Another connection holds a write lock on the ledger: SQLite's ``BEGIN EXCLUSIVE`` (each
    write of the gateway waits out its busy timeout, then fails with "database is locked"), or
    PostgreSQL's ``LOCK TABLE … IN EXCLUSIVE MODE`` (inserts wait until it is released; reads go
    on). As an ``Outage`` (SQLite) the database is unwritable; held briefly, it is slow."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._holder: sqlite3.Connection | psycopg.Connection[Any] | None = None

    def _lock(self) -> sqlite3.Connection | psycopg.Connection[Any]:
        if is_sqlite(self.url):
            path = self.url.split("///", 1)[1]
            holder = sqlite3.connect(path, timeout=10, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            return holder
        parts = urlsplit(self.url)
        connection = psycopg.connect(
            host=parts.hostname,
            port=parts.port,
            user=parts.username,
            dbname=parts.path.lstrip("/"),
        )
        connection.execute(f"LOCK TABLE {RequestRow.__tablename__} IN EXCLUSIVE MODE")
        return connection

    async def cut(self) -> None:
        assert self._holder is None
        # On the event loop's thread: sqlite3 connections stay on the thread that made them.
        self._holder = self._lock()

    async def restore(self) -> None:
        holder, self._holder = self._holder, None
        assert holder is not None
        holder.rollback() if isinstance(holder, psycopg.Connection) else holder.execute("ROLLBACK")
        holder.close()


class ProxiedPostgres:
    """PostgreSQL reached through a ``TcpProxy``: cutting it resets the live connections and
    refuses new ones."""

    def __init__(self, url: str, proxy: TcpProxy) -> None:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        self.url = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
        self._proxy = proxy

    async def cut(self) -> None:
        await self._proxy.cut()

    async def restore(self) -> None:
        await self._proxy.restore()


@contextlib.asynccontextmanager
async def outage_for(url: str) -> AsyncIterator[Outage]:
    """SQLite: a lock held on the file. PostgreSQL: the network between gateway and server."""
    if is_sqlite(url):
        yield LedgerLock(url)
        return
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with TcpProxy(parts.hostname, parts.port) as proxy:
        yield ProxiedPostgres(url, proxy)


# --- 1. the database goes away while requests flow ----------------------------------------------


async def test_database_outage_keeps_one_row_per_answered_request(
    ledger_url: str, tmp_path: Path
) -> None:
    """While the database is unreachable requests are still answered and their rows go to the
    outbox; once it is back the outbox is replayed, and the ledger then holds exactly one row
    per request answered, and nothing else."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    if not is_sqlite(ledger_url):
        await asyncio.to_thread(upgrade, ledger_url)
    async with (
        outage_for(ledger_url) as outage,
        gateway(policy, database_url=SecretStr(outage.url)) as (http, app),
    ):
        writer: LedgerWriter = app.state.ledger
        registry = app.state.metrics.registry

        def sample(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        peak = 0

        def outbox_seen() -> int:
            nonlocal peak
            peak = max(peak, writer.outbox.size)
            return writer.outbox.size

        async with Load(http, clients=CLIENTS) as load:
            await load.until(lambda: load.answered >= 30, "30 answers before the outage")
            await outage.cut()
            cut_at = load.answered
            if is_sqlite(ledger_url):
                # The writer waits out SQLite's busy timeout; requests are answered meanwhile.
                await load.until(lambda: writer.queue_depth >= 3 * CLIENTS, "rows queue up")
                assert outbox_seen() == 0, "the writer gave up before the busy timeout"
            await load.until(
                lambda: sample("tiergate_ledger_outbox_rows") > 0 and load.answered >= cut_at + 40,
                "rows in the outbox and 40 more answers during the outage",
            )
            during = load.answered - cut_at
            outbox_seen()
            await outage.restore()
            await load.until(lambda: outbox_seen() == 0, "the outbox replayed", within=WAIT_S)
        await writer.flush()

        exchanges = load.exchanges
        answered = [e.request_id or "(no x-request-id)" for e in exchanges if e.complete]
        rows = await asyncio.to_thread(ledger_rows, ledger_url)
        ids = [rid for rid, _status in rows]
        numbers(
            requests_sent=len(exchanges),
            answered=len(answered),
            answered_during_outage=during,
            rows=len(rows),
            outbox_peak=peak,
            via_outbox=sample("tiergate_ledger_rows_total", dest="outbox"),
        )

        assert [e for e in exchanges if e.error or e.status != 200] == []
        assert len(exchanges) == len(answered)
        assert len(set(answered)) == len(answered)
        assert sorted(ids) == sorted(answered)  # one row each: nothing missing, nothing twice
        assert writer.outbox.size == 0
        assert peak > 0
        via_outbox = sample("tiergate_ledger_rows_total", dest="outbox")
        assert sample("tiergate_ledger_rows_total", dest="replayed") == via_outbox > 0
        assert sample("tiergate_ledger_rows_total", dest="db") + via_outbox == len(answered)
        assert sample("tiergate_ledger_outbox_rows") == 0


# --- 2. SIGTERM under load ----------------------------------------------------------------------


class LedgerServer(Server):
    """``tiergate serve`` (``Server``) with its ledger at ``database_url``."""

    def __init__(
        self, policy: Path, *, workers: int, database_url: str, journal: bool = True
    ) -> None:
        self.outbox = policy.parent / "outbox.db"
        super().__init__(
            policy,
            watch=False,
            workers=workers,
            env={
                "TIERGATE_DATABASE_URL": database_url,
                "TIERGATE_OUTBOX_PATH": str(self.outbox),
                "TIERGATE_JOURNAL": "true" if journal else "false",
            },
        )


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_load_loses_no_row(
    ledger_url: str,
    tmp_path: Path,
    workers: int,
    servers: list[Server],
) -> None:
    """SIGTERM while requests are in flight and their rows are still queued (the database is
    slow: another connection holds a lock on the ledger): the server finishes the requests,
    drains the queue into the database and exits; every response a client received in full has
    its row, every request cut short has one too, and every row belongs to a request the server
    accounted for."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    if not is_sqlite(ledger_url):
        await asyncio.to_thread(upgrade, ledger_url)
    server = LedgerServer(policy, workers=workers, database_url=ledger_url)
    servers.append(server)
    await asyncio.to_thread(server.wait_ready)
    await asyncio.to_thread(server.wait_count, "gateway_started", workers)
    lock = LedgerLock(ledger_url)

    auth = {"authorization": f"Bearer {API_KEY}"}
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S) as http,
        Load(http, clients=CLIENTS, headers=auth) as load,
    ):
        await load.until(lambda: load.answered >= 40, "40 answers")
        await lock.cut()  # from here on the writer's inserts wait: rows stay queued
        locked_at = load.answered
        await load.until(
            lambda: load.answered >= locked_at + 40 and load.streaming_from("big") >= 2,
            "40 answers while the ledger is locked, and streams half sent",
        )
        in_flight = set(load.streaming)
        answered_before = load.answered
        server.proc.send_signal(signal.SIGTERM)
        await load.join()  # the server answered what it had taken, and stopped taking more
        # Every worker is now shutting down, its rows still queued behind the lock.
        draining = await asyncio.to_thread(server.wait_count, "ledger_draining", workers)
        await lock.restore()
        code = await asyncio.to_thread(server.proc.wait, WAIT_S)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; the supervisor exits 0.
    assert code in (0, -signal.SIGTERM), server.log()
    server.stop()  # the log read to its end
    assert len(server.events("gateway_stopped")) == workers  # every worker shut down cleanly

    exchanges = load.exchanges
    complete = {e.request_id or "(no x-request-id)": e.status for e in exchanges if e.complete}
    cut_short = {e.request_id for e in exchanges if e.request_id and not e.complete}
    unanswered = [e for e in exchanges if e.request_id is None]
    in_db = dict(await asyncio.to_thread(ledger_rows, ledger_url))
    # A drain whose inserts the lock held past the writer's 5 s deadline (a slow machine) put
    # the rest in the outbox, which the next start replays: kept, not lost.
    waiting = outbox_entries(server.outbox)
    rows = {**waiting, **in_db}
    accounted = {
        e["request_id"] for e in server.events("request") if e.get("attempts")
    }  # every request that reached a backend, as the server logged it
    numbers(
        requests_sent=len(exchanges),
        answered=len(complete),
        answered_while_locked=answered_before - locked_at,
        answered_after_sigterm=len(complete) - answered_before,
        queued_at_shutdown=[e["rows"] for e in draining],
        in_flight_streams=len(in_flight),
        cut_short=len(cut_short),
        no_response=len(unanswered),
        rows=len(rows),
        rows_in_outbox=len(waiting),
    )

    assert in_flight
    assert sum(e["rows"] for e in draining) > 0  # the drain had work to do
    assert in_flight <= set(complete) | cut_short
    assert all(status == 200 for status in complete.values())
    assert {rid: rows.get(rid) for rid in complete} == complete  # nothing answered is missing
    assert cut_short <= set(rows)
    assert set(rows) == accounted
    # Rows of no exchange the clients saw can only be requests whose response never came.
    assert len(set(rows) - set(complete) - cut_short) <= len(unanswered)


# --- 3. a restart with rows in the outbox -------------------------------------------------------


def entry(n: int) -> LedgerEntry:
    """A plausible row, different for each ``n``."""
    return LedgerEntry(
        id=str(uuid.UUID(int=n + 1, version=4)),
        ts=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        key_id="tests",
        policy_hash="0123456789abcdef",
        route="auto",
        tier="cheap",
        backend="small",
        model="small-model",
        score=0.1,
        cache="off",
        canary_arm=None,
        status=200,
        error_class=None,
        attempts=1,
        fallback_chain="small",
        stream=n % 2 == 0,
        prompt_tokens=10 + n,
        completion_tokens=20 + n,
        cached_tokens=0,
        usage_estimated=False,
        latency_ms=12.5,
        ttft_ms=3.0,
        server_ms=10.0,
        load_ms=None,
        cost_usd=Decimal("0.000001"),
        cost_source="policy",
        baseline_cost_usd=Decimal("0.00001"),
    )


async def test_restart_replays_the_outbox(ledger_url: str, tmp_path: Path) -> None:
    """A gateway starting with rows left in its outbox says so in the log and replays them into
    the database (ids already there are not written twice), leaving the outbox empty."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    outbox_path = tmp_path / "outbox.db"
    left = [entry(n) for n in range(25)]
    box = Outbox(outbox_path)
    box.put(left)
    box.close()
    # A crash between a replay's insert and its removal from the outbox: 5 rows are in both.
    engine = make_engine(ledger_url)
    try:
        await asyncio.to_thread(upgrade, ledger_url)
        await asyncio.to_thread(insert_batch, engine, left[:5])
    finally:
        engine.dispose()

    with capture_logs() as logs:
        async with gateway(policy, database_url=SecretStr(ledger_url), outbox_path=outbox_path) as (
            _http,
            app,
        ):
            writer: LedgerWriter = app.state.ledger
            await writer.flush()
            assert writer.outbox.size == 0
            rows = await asyncio.to_thread(ledger_rows, ledger_url)

    pending = [e for e in logs if e["event"] == "ledger_outbox_pending"]
    assert [(e["rows"], e["path"]) for e in pending] == [(len(left), str(outbox_path))]
    assert sorted(rid for rid, _status in rows) == sorted(e.id for e in left)
    assert outbox_rows(outbox_path) == 0


async def test_workers_sharing_an_outbox_replay_each_row_once(
    ledger_url: str, tmp_path: Path
) -> None:
    """Two workers (``serve --workers 2``) share one outbox file: the rows both left there are
    replayed once each by whichever writer runs first, and the other then counts none left (its
    outbox gauge does not keep showing rows that are gone)."""
    await asyncio.to_thread(upgrade, ledger_url)
    path = tmp_path / "outbox.db"
    first, second = Outbox(path), Outbox(path)
    left = [entry(n) for n in range(15)]
    first.put(left[:10])  # each worker put rows there while the database was down
    second.put(left[10:])
    assert (first.size, second.size) == (10, 15)  # each counts what it saw last

    metrics = [Metrics(), Metrics()]
    for box, metric in zip((first, second), metrics, strict=True):
        writer = LedgerWriter(make_engine(ledger_url), box, metric)
        writer.start()
        await writer.flush()
        assert box.size == 0
        await writer.aclose()

    rows = await asyncio.to_thread(ledger_rows, ledger_url)
    assert sorted(rid for rid, _status in rows) == sorted(e.id for e in left)
    assert [m.registry.get_sample_value("tiergate_ledger_outbox_rows") for m in metrics] == [0, 0]
    replayed = [
        m.registry.get_sample_value("tiergate_ledger_rows_total", {"dest": "replayed"}) or 0
        for m in metrics
    ]
    assert replayed == [len(left), 0]

"""The writer when the database refuses rows or hangs: a bad row is set aside (not retried
forever, not holding the others back), and a shutdown whose database hangs puts the rest in
the outbox instead of waiting forever or losing it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog.testing
from sqlalchemy import event
from sqlalchemy.engine import make_url

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from tests.ledger.test_writer import entries, entry, stored_ids
from tests.support import postgres


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> object:
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        yield url


async def test_a_row_the_database_refuses_is_set_aside(pg_url: str, tmp_path: Path) -> None:
    """A value PostgreSQL rejects (an integer out of range) fails its batch; the writer splits
    the batch, writes the good rows, and keeps the bad one in the outbox's rejected table."""
    engine = make_engine(pg_url)
    outbox = Outbox(tmp_path / "outbox.db")
    writer = LedgerWriter(engine, outbox)
    good = entries(9)
    bad = entry(prompt_tokens=2**40)
    with structlog.testing.capture_logs() as logs:
        writer.start()
        for row in [*good[:4], bad, *good[4:]]:
            writer.record(row)
        await writer.flush()
        rejected = outbox.rejected()
        await writer.aclose()
    assert sorted(stored_ids(pg_url)) == sorted(r.id for r in good)
    assert rejected == 1
    assert [e["ids"] for e in logs if e["event"] == "ledger_rows_rejected"] == [[bad.id]]
    assert not [e for e in logs if e["event"] == "ledger_db_unreachable"]


async def test_a_hung_database_cannot_stall_shutdown(pg_url: str, tmp_path: Path) -> None:
    """With the table locked by another session, close gives up after its deadline and the
    queued rows are in the outbox; the next writer replays them once the lock is gone."""
    url = make_url(pg_url)
    locker = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)
    rows = entries(20)
    try:
        locker.execute("LOCK TABLE ledger_requests IN EXCLUSIVE MODE")
        writer = LedgerWriter(make_engine(pg_url), Outbox(tmp_path / "outbox.db"))
        pool = writer.engine.pool  # the late connection goes back to this one
        with structlog.testing.capture_logs() as logs:
            writer.start()
            for row in rows:
                writer.record(row)
            await writer.aclose(timeout_s=0.5)
        timed_out = [e for e in logs if e["event"] == "ledger_drain_timeout"]
        assert timed_out
        assert timed_out[0]["rows"] == 20
        assert Outbox(tmp_path / "outbox.db").size == 20
        # The insert the deadline gave up on finishes on its thread once the lock is gone (the
        # same rows, so the replay below skips them): its connection comes back, and is closed
        # rather than left open in a pool nobody uses.
        loop = asyncio.get_running_loop()
        returned = asyncio.Event()
        late: list[Any] = []

        def checked_in(dbapi_connection: Any, _record: Any) -> None:
            late.append(dbapi_connection)
            loop.call_soon_threadsafe(returned.set)

        event.listen(pool, "checkin", checked_in)
    finally:
        locker.rollback()
        locker.close()
    async with asyncio.timeout(10):
        await returned.wait()
    assert [connection.closed for connection in late] == [True]
    later = LedgerWriter(make_engine(pg_url), Outbox(tmp_path / "outbox.db"))
    later.start()
    await later.flush()
    await later.aclose()
    assert sorted(stored_ids(pg_url)) == sorted(r.id for r in rows)

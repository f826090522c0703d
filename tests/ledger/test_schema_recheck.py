"""A gateway that started while PostgreSQL did not answer (its ledger schema ``unchecked``)
checks the schema once the database answers, the same way as at start: at head, the rows are
written and /readyz says ``at_head``; behind (PostgreSQL up before the migration Job ran, or a
fresh database), the rows wait in the outbox — never set aside as refused — /readyz says what to
run, and once `tiergate db upgrade` has run they drain by themselves (before: ``unchecked``
forever, and rows inserted with no check at all)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from gateway.ledger.db import upgrade
from gateway.ledger.writer import LedgerWriter
from tests.http.helpers import gateway, until
from tests.ledger.test_migrations import _tiergate
from tests.ledger.test_outbox_bound import through
from tests.ledger.test_outbox_ops import ASK, CHAT, POLICY
from tests.ledger.test_writer import stored_ids
from tests.support.tcp_proxy import TcpProxy


async def checked(http: httpx.AsyncClient) -> dict[str, Any]:
    """/readyz's ``ledger`` block once its schema is no longer ``unchecked``."""
    deadline = time.monotonic() + 30
    while True:
        ledger: dict[str, Any] = (await http.get("/readyz")).json()["ledger"]
        if ledger["schema"] != "unchecked":
            return ledger
        if time.monotonic() > deadline:
            pytest.fail("the ledger schema stayed `unchecked` with the database answering")
        await asyncio.sleep(0.05)


async def chat(http: httpx.AsyncClient) -> str:
    response = await http.post(CHAT, json={"model": "small", "messages": ASK})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


async def test_unchecked_at_start_then_at_head_is_checked_and_written(
    pg_db: str, tmp_path: Path
) -> None:
    upgrade(pg_db)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    parts = urlsplit(pg_db)
    assert parts.hostname is not None
    assert parts.port is not None
    async with TcpProxy(parts.hostname, parts.port) as proxy:
        await proxy.cut()  # nothing answers when the gateway starts
        async with gateway(policy, database_url=SecretStr(through(pg_db, proxy))) as (http, app):
            writer: LedgerWriter = app.state.ledger
            assert (await http.get("/readyz")).json()["ledger"]["schema"] == "unchecked"
            answered = [await chat(http)]
            await writer.flush()
            assert writer.outbox.size == 1  # kept while the database is away

            await proxy.restore()
            await checked(http)
            await until(lambda: writer.outbox.size == 0, "the outbox to drain", within_s=30)
            answered.append(await chat(http))
            await writer.flush()
            ledger = (await http.get("/readyz")).json()["ledger"]
    assert ledger["schema"] == "at_head"
    assert "this gateway's revision" in ledger["detail"]
    assert ledger["outbox"]["rejected"] == 0
    assert sorted(stored_ids(pg_db)) == sorted(answered)


@pytest.mark.parametrize("revision", ["0012", None], ids=["behind", "empty"])
async def test_unchecked_at_start_then_behind_waits_for_the_upgrade(
    pg_db: str, tmp_path: Path, revision: str | None
) -> None:
    if revision is not None:
        upgrade(pg_db, revision)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    parts = urlsplit(pg_db)
    assert parts.hostname is not None
    assert parts.port is not None
    with capture_logs() as logs:
        async with TcpProxy(parts.hostname, parts.port) as proxy:
            await proxy.cut()
            async with gateway(policy, database_url=SecretStr(through(pg_db, proxy))) as (
                http,
                app,
            ):
                writer: LedgerWriter = app.state.ledger
                answered = [await chat(http)]
                await writer.flush()

                await proxy.restore()
                behind = await checked(http)
                behind_status = (await http.get("/readyz")).json()["status"]
                answered.append(await chat(http))  # a row after the verdict waits too
                await writer.flush()
                assert writer.outbox.size == 2
                assert writer.outbox.rejected_size == 0  # waiting, not refused
                if revision is not None:  # (an empty database has no table to look in)
                    assert stored_ids(pg_db) == []

                done = await asyncio.to_thread(
                    _tiergate, "db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=pg_db
                )
                assert done.returncode == 0, done.stderr
                await until(lambda: writer.outbox.size == 0, "the outbox to drain", within_s=30)
                ready_body = (await http.get("/readyz")).json()
                ready = ready_body["ledger"]
    assert behind_status == "degraded"  # serving, but its rows cannot reach the database
    assert ready_body["status"] == "ready"
    assert behind["schema"] == ("behind" if revision else "empty")
    assert f"at revision {revision or 'none'}" in behind["detail"]
    assert "`tiergate db upgrade`" in behind["detail"]
    # and that the rows are safe meanwhile, and written without a restart (before: only the
    # command, which read as if the gateway had to be restarted after it)
    assert "rows wait in the local outbox" in behind["detail"]
    assert "no restart" in behind["detail"]
    assert behind["outbox"]["rejected"] == 0
    assert ready["schema"] == "at_head"
    assert ready["outbox"] == {**ready["outbox"], "rows": 0, "rejected": 0}
    assert sorted(stored_ids(pg_db)) == sorted(answered)
    events = [e["event"] for e in logs]
    assert events.count("ledger_schema_unusable") == 1  # said once, though checked repeatedly
    assert events.count("ledger_schema_checked") == 1
    assert "ledger_rows_rejected" not in events

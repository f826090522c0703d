"""SIGKILL under load, then a restart: the write-ahead journal's promise, on SQLite and
PostgreSQL. Every request whose answer a client received in full has exactly one row once the
gateway is back, and so does every stream the kill cut short (as an interrupted row, unless its
end had been recorded). With the ledger frozen before the kill (a lock another connection
holds: the writer's inserts wait, rows pile up in memory) the same holds; with the journal
off, the same kill loses those rows, which is what the journal is for."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from gateway.ledger.db import is_sqlite, make_engine, upgrade
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.models import RequestRow
from tests.http.live_server import API_KEY, WAIT_S, Server
from tests.ledger.test_faults import POLICY, LedgerLock, LedgerServer, numbers
from tests.support.held_upstream import HeldUpstream
from tests.support.loadgen import Load

CLIENTS = 8
# How long the ledger stays frozen before the kill, at least (it also waits for the gateway to
# notice, ~5 s). The acceptance run uses 20: TIERGATE_TEST_FREEZE_S=20.
FREEZE_S = float(os.environ.get("TIERGATE_TEST_FREEZE_S", "0"))
AUTH = {"authorization": f"Bearer {API_KEY}"}


def rows_by_id(url: str) -> dict[str, tuple[int, str | None]]:
    """id → (status, error_class) of every ledger row; fails on a duplicate id."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                select(RequestRow.id, RequestRow.status, RequestRow.error_class)
            ).all()
    finally:
        engine.dispose()
    ids = [str(rid) for rid, _status, _error in found]
    assert len(ids) == len(set(ids)), "a request has two rows"
    return {str(rid): (int(status), error) for rid, status, error in found}


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*")) if directory.is_dir() else []


async def kill_under_load(
    server: Server, *, ledger_url: str, frozen: bool, until_noticed: bool = True
) -> tuple[dict[str, int], set[str], int]:
    """Load the server, optionally freeze the ledger, SIGKILL it with streams half sent.
    Returns the ids answered in full (→ status), the ids cut short, and the answers given while
    the ledger was frozen."""
    lock = LedgerLock(ledger_url)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S) as http,
        Load(http, clients=CLIENTS, headers=AUTH) as load,
    ):
        await load.until(lambda: load.answered >= 40, "40 answers")
        frozen_at = load.answered
        if frozen:
            await lock.cut()  # the writer's inserts now wait: rows stay in memory
        if frozen and until_noticed:
            # Frozen until the gateway has noticed (an insert given up on after its 5 s
            # deadline, or SQLite's busy timeout: rows then go to the outbox) and at least
            # FREEZE_S seconds.
            since = time.monotonic()
            await load.until(
                lambda: (
                    bool(server.events("ledger_db_unreachable"))
                    and time.monotonic() - since >= FREEZE_S
                ),
                "the gateway noticed the frozen ledger",
                within=FREEZE_S + 30,
            )
        await load.until(
            # the big model's streams (a word at a time): the small one's arrive all at once,
            # so one half sent now may be whole by the time the kill lands
            lambda: load.answered >= frozen_at + 40 and load.streaming_from("big") >= 2,
            "40 more answers, and streams half sent",
        )
        answered_frozen = load.answered - frozen_at if frozen else 0
        server.proc.send_signal(signal.SIGKILL)
        await load.join()  # every client ends at its first transport error
    if frozen:
        await lock.restore()
    assert server.proc.wait(WAIT_S) == -signal.SIGKILL
    server.stop()
    exchanges = load.exchanges
    complete = {e.request_id: e.status or 0 for e in exchanges if e.complete and e.request_id}
    cut_short = {e.request_id for e in exchanges if e.request_id and not e.complete}
    assert all(status == 200 for status in complete.values())
    return complete, cut_short, answered_frozen


async def restart_and_settle(server: Server) -> list[dict[str, object]]:
    """Start again on the same files; wait for the journal's recovery and its replay; stop."""
    await asyncio.to_thread(server.wait_ready)
    recovered = server.events("ledger_journal_recovered")
    if recovered:
        await asyncio.to_thread(server.wait_for, "ledger_outbox_replayed", left=0)
    server.stop()
    return recovered


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen"])
async def test_sigkill_under_load_loses_no_row(
    ledger_url: str, tmp_path: Path, servers: list[Server], frozen: bool
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    if not is_sqlite(ledger_url):
        await asyncio.to_thread(upgrade, ledger_url)
    first = LedgerServer(policy, workers=1, database_url=ledger_url)
    servers.append(first)
    await asyncio.to_thread(first.wait_ready)
    complete, cut_short, answered_frozen = await kill_under_load(
        first, ledger_url=ledger_url, frozen=frozen
    )
    journal_dir = tmp_path / "journal"
    left_behind = journal_files(journal_dir)
    assert left_behind, "the killed process left no journal"

    again = LedgerServer(policy, workers=1, database_url=ledger_url)
    servers.append(again)
    recovered = await restart_and_settle(again)
    rows = await asyncio.to_thread(rows_by_id, ledger_url)
    numbers(
        answered=len(complete),
        answered_while_frozen=answered_frozen,
        cut_short=len(cut_short),
        recovered=[e["rows"] for e in recovered],
        interrupted=[e["interrupted_streams"] for e in recovered],
        rows=len(rows),
    )

    missing = [rid for rid in complete if rid not in rows]
    assert missing == [], f"{len(missing)} answered requests have no row"
    assert all(rows[rid][0] == 200 for rid in complete)
    assert cut_short <= set(rows)  # a stream the kill cut short has its row too
    # What the kill interrupted is marked so (unless its real row was already recorded).
    assert any(rows[rid] == (499, INTERRUPTED) for rid in cut_short)
    assert all(rows[rid] in {(200, None), (499, INTERRUPTED)} for rid in cut_short)
    moved = sum(int(str(e["rows"])) for e in recovered)
    assert moved > 0  # the kill left rows only the journal had
    assert journal_files(journal_dir) == []  # recovered, then the clean stop removed its own


async def test_without_the_journal_a_sigkill_loses_the_rows_in_memory(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The contrast: the journal off, the ledger frozen, SIGKILL: rows answered while frozen
    were only in memory, and are gone (this is the failure the journal removes)."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    first = LedgerServer(policy, workers=1, database_url=ledger_url, journal=False)
    servers.append(first)
    await asyncio.to_thread(first.wait_ready)
    complete, _cut_short, _frozen = await kill_under_load(
        first, ledger_url=ledger_url, frozen=True, until_noticed=False
    )
    again = LedgerServer(policy, workers=1, database_url=ledger_url, journal=False)
    servers.append(again)
    await restart_and_settle(again)
    rows = await asyncio.to_thread(rows_by_id, ledger_url)
    missing = [rid for rid in complete if rid not in rows]
    numbers(answered=len(complete), rows=len(rows), missing=len(missing))
    assert len(missing) >= 20


async def test_sigkill_while_backends_work_leaves_their_rows(
    ledger_url: str, tmp_path: Path, servers: list[Server]
) -> None:
    """Requests killed while their backend is still working on them: a whole answer, and a
    stream before its first chunk. The clients got nothing, but each request reached a backend
    (which a hosted API bills): after the restart each has exactly one row, status 499
    ``interrupted``, against that backend, with the prompt's estimated tokens. Before, only a
    stream that had opened was journaled, so these two left no row at all."""
    async with HeldUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "version: 1\n"
            "backends:\n"
            f"  held: {{type: openai_compat, model: {upstream.MODEL}, "
            f'base_url: "{upstream.base_url}"}}\n'
            "tiers:\n"
            "  - {name: only, backends: [held]}\n"
            "pricing:\n"
            "  backends:\n"
            "    held: {usd_per_1m_input: 1.0, usd_per_1m_output: 4.0}\n"
        )
        if not is_sqlite(ledger_url):
            await asyncio.to_thread(upgrade, ledger_url)
        first = LedgerServer(policy, workers=1, database_url=ledger_url)
        servers.append(first)
        await asyncio.to_thread(first.wait_ready)
        prompt = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
        async with httpx.AsyncClient(base_url=first.base_url, timeout=WAIT_S) as http:

            async def ask(stream: bool) -> str:
                try:
                    response = await http.post(
                        "/v1/chat/completions", json={**prompt, "stream": stream}, headers=AUTH
                    )
                except httpx.TransportError as exc:
                    return type(exc).__name__
                return f"HTTP {response.status_code}"

            asked = [asyncio.create_task(ask(False)), asyncio.create_task(ask(True))]
            await upstream.until_held(2)  # both are with the backend now
            first.proc.send_signal(signal.SIGKILL)
            seen = await asyncio.gather(*asked)
        assert first.proc.wait(WAIT_S) == -signal.SIGKILL
        first.stop()
        assert not any(s.startswith("HTTP") for s in seen), seen  # nothing was answered

        again = LedgerServer(policy, workers=1, database_url=ledger_url)
        servers.append(again)
        await restart_and_settle(again)

    engine = make_engine(ledger_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    RequestRow.stream,
                    RequestRow.status,
                    RequestRow.error_class,
                    RequestRow.backend,
                    RequestRow.tier,
                    RequestRow.prompt_tokens,
                    RequestRow.completion_tokens,
                    RequestRow.usage_estimated,
                ).order_by(RequestRow.stream)
            ).all()
    finally:
        engine.dispose()
    numbers(rows=len(rows))
    row = (499, INTERRUPTED, "held", "only")
    assert [tuple(r[:5]) for r in rows] == [(False, *row), (True, *row)]
    assert all(r.prompt_tokens > 0 and r.completion_tokens == 0 for r in rows)
    assert all(r.usage_estimated for r in rows)

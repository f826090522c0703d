"""SIGKILL in the middle of a streamed answer, then a restart: the interrupted row the journal
leaves bills the output its client had received, at the backend's prices, not the prompt alone
(the backend generated those tokens, and a hosted API bills them). The backend is an
OpenAI-compatible upstream that streams as the test releases its pieces (one token each), so
the kill lands after exactly ``k`` pieces reached the client; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from gateway.ledger.db import is_sqlite, make_engine, upgrade
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.models import RequestRow
from gateway.ledger.streamed import STREAMED
from gateway.pipeline.progress import EVERY_PIECES
from gateway.scoring.tokens import count_exact
from tests.faults.test_sigkill import AUTH, restart_and_settle
from tests.http.live_server import WAIT_S, Server
from tests.ledger.test_faults import LedgerServer, numbers
from tests.support.drip_upstream import DripUpstream

INPUT, OUTPUT = Decimal("1.0"), Decimal("100.0")  # USD per million tokens


def policy_for(upstream: DripUpstream) -> str:
    return (
        "version: 1\n"
        "backends:\n"
        f"  drip: {{type: openai_compat, model: {upstream.MODEL}, "
        f'base_url: "{upstream.base_url}"}}\n'
        "tiers:\n"
        "  - {name: only, backends: [drip]}\n"
        "pricing:\n"
        "  backends:\n"
        f"    drip: {{usd_per_1m_input: {INPUT}, usd_per_1m_output: {OUTPUT}}}\n"
    )


async def read_pieces(lines: AsyncIterator[str], count: int) -> str:
    """Read a stream's lines until ``count`` content pieces have arrived; their text. (The
    caller keeps ``lines``: once it is collected, the connection closes, and the gateway
    rightly counts the stream as abandoned, 499 as it stands, before the kill.)"""
    pieces: list[str] = []
    while len(pieces) < count:
        line = await asyncio.wait_for(anext(lines), WAIT_S)
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in orjson.loads(line.removeprefix("data: "))["choices"]:
            if choice["delta"].get("content"):
                pieces.append(choice["delta"]["content"])
    return "".join(pieces)


def noted(journal: Path, rid: str) -> int:
    """The output tokens the journal's last progress line of ``rid`` says were sent (0: none)."""
    tokens = 0
    for segment in sorted(journal.glob("journal-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the gateway is writing it as we read: the next poll sees it whole
            if data.get(STREAMED) == rid:
                tokens = int(data["completion_tokens"])
    return tokens


async def until_noted(journal: Path, rid: str, tokens: int) -> None:
    """Wait until the gateway's journal notes ``tokens`` of ``rid``'s output sent (the progress
    line a slow stream gets a moment after its last piece)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while noted(journal, rid) < tokens:
        assert loop.time() < deadline, f"the journal never noted {tokens} tokens of {rid}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("pieces", "pause"),
    [(2 * EVERY_PIECES, False), (5, True)],
    ids=["killed-at-once", "killed-after-a-pause"],
)
async def test_sigkill_mid_stream_bills_the_output_sent(
    ledger_url: str, tmp_path: Path, servers: list[Server], pieces: int, pause: bool
) -> None:
    """``killed-at-once``: the kill follows the client's last piece at once (a multiple of the
    journal's coalescing count, so the line covering it was written before it went out).
    ``killed-after-a-pause``: fewer pieces than that, the stream then silent until the kill
    (the line a slow stream gets within a moment of its last piece). Either way, after the
    restart the request's one row is interrupted (499), its output tokens at least what the
    client received, priced at the backend's output price on top of the prompt's, and flagged
    estimated. Before, it billed the prompt alone (0 output tokens)."""
    journal = tmp_path / "journal"
    async with DripUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_for(upstream))
        if not is_sqlite(ledger_url):
            await asyncio.to_thread(upgrade, ledger_url)
        first = LedgerServer(policy, workers=1, database_url=ledger_url)
        servers.append(first)
        await asyncio.to_thread(first.wait_ready)
        upstream.release(pieces)
        body = {
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": "count for me, slowly"}],
        }
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=WAIT_S) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as response,
        ):
            assert response.status_code == 200
            rid = response.headers["x-request-id"]
            lines = response.aiter_lines()
            received = await read_pieces(lines, pieces)
            if pause:
                await until_noted(journal, rid, count_exact(received))
            first.proc.send_signal(signal.SIGKILL)
            assert first.proc.wait(WAIT_S) == -signal.SIGKILL
        first.stop()

        again = LedgerServer(policy, workers=1, database_url=ledger_url)
        servers.append(again)
        recovered = await restart_and_settle(again)

    engine = make_engine(ledger_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(
                    RequestRow.status,
                    RequestRow.error_class,
                    RequestRow.backend,
                    RequestRow.usage_estimated,
                    RequestRow.prompt_tokens,
                    RequestRow.completion_tokens,
                    RequestRow.cost_usd,
                ).where(RequestRow.id == rid)
            ).one()
    finally:
        engine.dispose()
    sent = count_exact(received)
    numbers(
        received_pieces=pieces,
        received_tokens=sent,
        row_completion_tokens=row.completion_tokens,
        row_cost=row.cost_usd,
        streamed=[e.get("streamed") for e in recovered],
    )
    assert (row.status, row.error_class, row.backend) == (499, INTERRUPTED, "drip")
    assert row.usage_estimated
    assert row.prompt_tokens > 0
    assert row.completion_tokens >= sent
    prompt_only = Decimal(row.prompt_tokens) * INPUT / 1_000_000
    assert row.cost_usd is not None
    assert row.cost_usd > prompt_only
    expected = prompt_only + Decimal(row.completion_tokens) * OUTPUT / 1_000_000
    assert row.cost_usd == expected

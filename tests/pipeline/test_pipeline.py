"""The request path without HTTP: ``Pipeline.handle`` over a process's real services (policy,
backend pool, SQLite ledger, in-process cache, canary), driven with plain values."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from adapters.base import ChatRequest, EmbeddingRequest, Message
from gateway.app import Services
from gateway.ledger.models import RequestRow
from gateway.ledger.streamed import STREAMED, Streamed
from gateway.pipeline import Answer, Broke, Ended, Inbound, Refused, Stream
from gateway.pipeline.progress import EVERY_PIECES
from gateway.scoring.tokens import count_exact
from gateway.settings import Settings
from tests.http.helpers import factory_with, until

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "small answer"}]}
  big: {type: fake, model: big-model, script: [{reply: "big answer"}]}
  broken:
    type: fake
    model: broken-model
    script: [{reply: "half of it", error: unavailable, fail_after_chunks: 1}]
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big, broken]}
"""


@contextlib.asynccontextmanager
async def services_over(tmp_path: Path, text: str) -> AsyncIterator[Services]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    settings = Settings(
        policy=policy,
        watch_policy=False,
        database_url=SecretStr(f"sqlite:///{tmp_path / 'ledger.db'}"),
        outbox_path=tmp_path / "outbox.db",
    )
    opened = await Services.open(settings, factory_with({}))
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    async with services_over(tmp_path, POLICY) as opened:
        yield opened


def _inbound(text: str, *, model: str | None = None, stream: bool = False) -> Inbound:
    chat = ChatRequest(messages=(Message("user", text),), max_tokens=16, temperature=0.0)
    return Inbound(chat=chat, model=model, stream=stream, key_id="k1")


async def _rows(services: Services) -> list[RequestRow]:
    assert services.ledger is not None
    await services.ledger.flush()
    with services.ledger.engine.connect() as connection:
        return list(connection.execute(select(RequestRow)).all())  # type: ignore[arg-type]


async def test_a_whole_answer_carries_its_receipt_and_its_ledger_row(services: Services) -> None:
    """A short prompt goes to the cheap tier; the receipt and the ledger row agree."""
    result = await services.pipeline.handle(_inbound("hi"))
    assert isinstance(result, Answer)
    assert result.completion.text == "small answer"
    receipt = result.receipt
    assert (receipt.route, receipt.tier, receipt.backend) == ("auto", "cheap", "small")
    assert receipt.complexity is not None
    assert receipt.complexity < 0.3
    assert receipt.cache == "miss"
    (row,) = await _rows(services)
    assert (row.id, row.tier, row.backend, row.status) == (
        receipt.request_id,
        "cheap",
        "small",
        200,
    )


async def test_the_same_request_again_is_answered_from_the_cache(services: Services) -> None:
    first = await services.pipeline.handle(_inbound("hi"))
    await services.cache.flush()  # the answer is stored off the request path
    again = await services.pipeline.handle(_inbound("hi"))
    assert isinstance(first, Answer)
    assert isinstance(again, Answer)
    assert again.completion.text == first.completion.text
    assert (again.receipt.backend, again.receipt.cache) == ("cache", "hit")
    assert again.receipt.cost == Decimal(0)
    assert [r.backend for r in await _rows(services)] == ["small", "cache"]


async def test_a_stream_yields_its_chunks_then_its_end_and_is_recorded_once(
    services: Services,
) -> None:
    """The row is written when the end is reached (before the last byte), and closing the
    stream afterwards does not write a second one."""
    result = await services.pipeline.handle(_inbound("hi", model="big", stream=True))
    assert isinstance(result, Stream)
    assert result.receipt.complexity is None
    assert result.receipt.pinned
    text, ends = [], []
    async for event in result.events:
        if isinstance(event, tuple):
            text.append(event[1].delta)
        else:
            ends.append(event)
            if isinstance(event, Ended):
                assert len(await _rows(services)) == 0  # the end's events first, then the row
    assert "".join(text) == "big answer"
    assert [type(e) for e in ends] == [Ended]
    (row,) = await _rows(services)
    await result.close()
    assert [(r.id, r.status, r.stream) for r in await _rows(services)] == [
        (result.receipt.request_id, 200, True)
    ]
    assert row.completion_tokens > 0


async def test_a_stream_that_breaks_after_its_first_chunk_ends_with_broke(
    services: Services,
) -> None:
    result = await services.pipeline.handle(_inbound("hi", model="broken", stream=True))
    assert isinstance(result, Stream)
    events = [event async for event in result.events]
    assert isinstance(events[-1], Broke)
    assert "scripted failure" in events[-1].message  # the backend's own error
    await result.close()
    (row,) = await _rows(services)
    assert (row.status, row.error_class) == (502, "BackendUnavailable")


async def test_a_stream_closed_before_its_end_is_recorded_as_abandoned(
    services: Services,
) -> None:
    result = await services.pipeline.handle(_inbound("hi", model="big", stream=True))
    assert isinstance(result, Stream)
    await anext(result.events)
    await result.close()
    (row,) = await _rows(services)
    assert row.status == 499


def _progress(journal: Path, rid: str) -> list[Streamed]:
    """The progress lines of ``rid`` in the journal, in order."""
    return [
        Streamed.read(data)
        for segment in sorted(journal.glob("journal-*.jsonl"))
        for line in segment.read_bytes().splitlines()
        if (data := orjson.loads(line)).get(STREAMED) == rid
    ]


async def test_a_stream_journals_its_progress_before_the_piece_that_completes_a_line(
    tmp_path: Path,
) -> None:
    """A stream's output so far is in the journal, priced at the backend's prices, by the time
    the piece that brings the pieces sent to a multiple of ``EVERY_PIECES`` reaches the reader
    (what a process killed then would bill); its real row, at the end, is the ledger's."""
    words = " ".join(f"w{i}" for i in range(2 * EVERY_PIECES + 10))
    policy = (
        "version: 1\n"
        "backends:\n"
        f'  long: {{type: fake, model: long-model, script: [{{reply: "{words}"}}]}}\n'
        "tiers:\n"
        "  - {name: only, backends: [long]}\n"
        "pricing:\n"
        "  backends:\n"
        "    long: {usd_per_1m_input: 1.0, usd_per_1m_output: 100.0}\n"
    )
    async with services_over(tmp_path, policy) as services:
        chat = ChatRequest(messages=(Message("user", "hi"),), max_tokens=1000, temperature=0.0)
        result = await services.pipeline.handle(
            Inbound(chat=chat, model=None, stream=True, key_id="k1")
        )
        assert isinstance(result, Stream)
        rid, received, seen = result.receipt.request_id, [], []
        async for event in result.events:
            if isinstance(event, tuple) and event[1].delta:
                received.append(event[1].delta)
                if len(received) % EVERY_PIECES == 0:
                    lines = _progress(tmp_path / "journal", rid)
                    assert lines, f"no progress journaled after {len(received)} pieces"
                    seen.append((count_exact("".join(received)), lines[-1]))
        await result.close()
        (row,) = await _rows(services)
    assert len(seen) == 2
    for tokens, noted in seen:
        assert noted.completion_tokens == tokens
        prompt = Decimal(row.prompt_tokens)
        assert noted.cost_usd == (prompt + 100 * tokens) / 1_000_000
    assert (row.id, row.status, row.error_class) == (rid, 200, None)
    assert row.completion_tokens == len(received)  # the backend's own count, at the end


HANGING = """
version: 1
backends:
  hanging: {type: fake, model: hanging-model, script: [{reply: "too late", delay_ms: 60000}]}
tiers:
  - {name: only, backends: [hanging]}
"""


@pytest.mark.parametrize("api", ["whole", "stream", "embeddings"])
async def test_a_request_cancelled_while_its_backend_works_is_recorded_as_abandoned(
    tmp_path: Path, api: str
) -> None:
    """The client went away (the HTTP edge cancels the call, ``gateway.http.disconnect``): the
    backend call is cancelled and let go, and the request has its one row, as a stream cut
    short has: 499 against the backend it reached, the prompt estimated, no completion."""
    async with services_over(tmp_path, HANGING) as services:
        hanging = services.runtime.active.pool["hanging"]
        call: Awaitable[object]
        if api == "embeddings":
            call = services.pipeline.embed(
                EmbeddingRequest(inputs=("hi there",)), None, "k1", time.perf_counter()
            )
        else:
            call = services.pipeline.handle(_inbound("hi there", stream=api == "stream"))
        task = asyncio.ensure_future(call)
        await until(lambda: hanging.in_flight == 1, "the request to reach the backend")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hanging.in_flight == 0
        (row,) = await _rows(services)
        assert (row.status, row.error_class, row.backend, row.tier, row.model) == (
            499,
            None,
            "hanging",
            "only",
            "hanging-model",
        )
        assert (row.stream, row.attempts) == (api == "stream", 1)
        assert row.prompt_tokens > 0
        assert row.completion_tokens == 0
        assert row.usage_estimated is True


async def test_an_unknown_route_is_refused_naming_the_field(services: Services) -> None:
    with pytest.raises(Refused) as refused:
        await services.pipeline.handle(_inbound("hi", model="nope"))
    error = refused.value.error
    assert (error.status, error.param, error.code) == (400, "model", "model_not_found")
    assert refused.value.receipt.route is None
    assert await _rows(services) == []


SLOW = """
version: 1
backends:
  slow: {type: fake, model: slow-model, script: [{reply: "late answer", delay_ms: 300}]}
tiers:
  - {name: only, backends: [slow]}
timeouts: {total_s: 1.0, per_try_s: 1.0, cold_start_s: 0}
"""


@pytest.mark.parametrize(("spent_s", "answered"), [(0.0, True), (0.9, False)])
async def test_the_deadline_counts_from_the_requests_arrival(
    tmp_path: Path, spent_s: float, answered: bool
) -> None:
    """Time spent before dispatch (reading the body, a cold start, planning) comes out of
    timeouts.total_s: a request that arrived 0.9 s ago has 0.1 s left for a 0.3 s answer."""
    policy = tmp_path / "slow.yaml"
    policy.write_text(SLOW)
    settings = Settings(policy=policy, watch_policy=False, ledger=False)
    services = await Services.open(settings, factory_with({}))
    try:
        chat = ChatRequest(messages=(Message("user", "hi"),), max_tokens=16)
        inbound = Inbound(
            chat=chat, model=None, stream=False, arrived=time.perf_counter() - spent_s
        )
        if answered:
            result = await services.pipeline.handle(inbound)
            assert isinstance(result, Answer)
            assert result.completion.text == "late answer"
        else:
            with pytest.raises(Refused) as refused:
                await services.pipeline.handle(inbound)
            assert (refused.value.error.status, refused.value.error.code) == (
                504,
                "backend_timeout",
            )
    finally:
        await services.aclose()

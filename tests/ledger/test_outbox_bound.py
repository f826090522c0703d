"""The outbox's bound (``TIERGATE_OUTBOX_MAX_BYTES``): while PostgreSQL is unreachable the
outbox fills; at 80 % one warning, at the bound new requests get a 503 ``ledger_outbox_full`` in
their API's own format and ``/readyz`` says unavailable, while a request admitted before keeps
its row; once the database answers the outbox drains and requests are admitted again, every
answered request with exactly one row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from adapters.chat import ChatRequest, Chunk
from adapters.config import FakeConfig
from adapters.fake import FakeBackend
from gateway.ledger.capacity import MIN_BYTES, OutboxBound, parse_size
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from gateway.settings import Settings
from tests.http.helpers import gateway, served, until
from tests.ledger.test_faults import entry, numbers, outbox_entries
from tests.ledger.test_writer import stored_ids
from tests.support import postgres
from tests.support.tcp_proxy import TcpProxy

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "a short answer"}]}
  slow: {type: fake, model: slow-model, script: [{reply: "a streamed answer, held at its end"}]}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [slow]}
timeouts: {total_s: 300, per_try_s: 300, stream_idle_s: 300}  # the held stream waits on the test
"""
CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "hi"}]
BOUND = MIN_BYTES  # 64 KiB: the empty file takes ~20 KiB, so a few dozen rows fill it


class HeldStream(FakeBackend):
    """The shipped fake, whose streams wait before their last chunk until ``release`` is set:
    a request that is in flight for as long as the test wants."""

    def __init__(self) -> None:
        script = [{"reply": "a streamed answer, held at its end"}]
        config = {"type": "fake", "model": "slow-model", "script": script}
        super().__init__("slow", FakeConfig.model_validate(config))
        self.release = asyncio.Event()

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        async for chunk in super().astream(request):
            if chunk.finish_reason is not None:
                await self.release.wait()
            yield chunk


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> Iterator[str]:
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        yield url


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


async def test_a_full_outbox_refuses_new_requests_until_the_database_answers(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL cut mid-traffic, over a real uvicorn: filling, full (503 in each API's words,
    /readyz 503), a stream admitted before the bound keeps its row past it, and the database
    back: admitted again, one row per answered request and none for a refused one."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    slow = HeldStream()
    parts = urlsplit(pg_url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with (
        TcpProxy(parts.hostname, parts.port) as proxy,
        gateway(
            policy,
            backends={"slow": slow},
            database_url=SecretStr(through(pg_url, proxy)),
            outbox_max_bytes=BOUND,
        ) as (_asgi, app),
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        writer: LedgerWriter = app.state.ledger
        registry = app.state.metrics.registry

        def sample(name: str) -> float:
            return registry.get_sample_value(name) or 0.0

        async def chat() -> httpx.Response:
            return await http.post(CHAT, json={"model": "small", "messages": ASK})

        answered: list[str] = []
        first = await chat()
        assert first.status_code == 200
        answered.append(first.headers["x-request-id"])
        await writer.flush()
        assert stored_ids(pg_url) == answered  # the database takes rows while it answers

        with capture_logs() as logs:
            # A stream admitted before the bound: it reached its backend and waits there.
            async with http.stream(
                "POST", CHAT, json={"model": "slow", "messages": ASK, "stream": True}
            ) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("data: ")
                await proxy.cut()  # PostgreSQL unreachable: rows go to the outbox

                refused: httpx.Response | None = None
                filling: httpx.Response | None = None
                for _ in range(2_000):
                    response = await chat()
                    if response.status_code != 200:
                        refused = response
                        break
                    answered.append(response.headers["x-request-id"])
                    await writer.flush()  # a row at a time: each step of the filling is seen
                    if filling is None and writer.capacity.reading().state == "filling":
                        filling = await http.get("/readyz")
                assert refused is not None, f"no refusal after {len(answered)} answers"
                assert filling is not None
                assert filling.status_code == 200  # past 80 %: still serving, degraded
                assert filling.json()["status"] == "degraded"
                assert filling.json()["ledger"]["outbox"]["state"] == "filling"
                await writer.flush()
                in_outbox = writer.outbox.size
                numbers(
                    answered_during_outage=len(answered) - 1,
                    outbox_rows=in_outbox,
                    outbox_bytes=writer.outbox.used_bytes,
                )
                assert writer.outbox.used_bytes >= BOUND
                assert len(answered) > 10, "the bound was hit before the outbox had rows"

                # At the bound, every API refuses in its own words, and names no internals.
                messages = await http.post(
                    "/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": ASK}
                )
                responses = await http.post("/v1/responses", json={"model": "auto", "input": "hi"})
                embeddings = await http.post("/v1/embeddings", json={"input": "hi"})
                ready = await http.get("/readyz")
                for shown in (refused, messages, responses, embeddings):
                    assert shown.status_code == 503, shown.text
                    assert shown.headers["retry-after"] == "5"
                    assert str(tmp_path) not in shown.text
                    assert "outbox.db" not in shown.text
                for openai in (refused, responses, embeddings):
                    error = openai.json()["error"]
                    assert error["type"] == "service_unavailable"
                    assert error["code"] == "ledger_outbox_full"
                    assert "ledger is unavailable" in error["message"]
                assert messages.json()["type"] == "error"
                assert messages.json()["error"]["type"] == "overloaded_error"
                assert "ledger is unavailable" in messages.json()["error"]["message"]
                assert ready.status_code == 503
                assert ready.json()["status"] == "unavailable"
                assert ready.json()["causes"] == ["ledger_outbox_full"]
                outbox = ready.json()["ledger"]["outbox"]
                assert outbox["state"] == "full"
                assert outbox["max_bytes"] == BOUND
                assert outbox["bytes"] >= BOUND
                assert sample("tiergate_ledger_outbox_bytes") >= BOUND
                assert sample("tiergate_ledger_outbox_limit_bytes") == BOUND
                assert sample("tiergate_ledger_outbox_rows") == in_outbox
                assert sample("tiergate_ledger_outbox_refused_total") == 4

                # The stream admitted before the bound ends, and its row goes past the bound.
                slow.release.set()
                rest = [line async for line in lines if line]
                assert rest[-1] == "data: [DONE]"
                streamed = stream.headers["x-request-id"]
                answered.append(streamed)
            await writer.flush()
            assert writer.outbox.size == in_outbox + 1
            assert streamed in outbox_entries(tmp_path / "outbox.db")

            # The database answers again: the outbox is replayed and requests are admitted.
            await proxy.restore()
            await until(lambda: not writer.capacity.full, "the outbox to drain", within_s=30)
            again = await chat()
            assert again.status_code == 200
            answered.append(again.headers["x-request-id"])
            assert (await http.get("/readyz")).status_code == 200
            await writer.flush()
            await until(lambda: writer.outbox.size == 0, "the rest of the replay", within_s=30)

    events = [e["event"] for e in logs]
    assert events.count("ledger_outbox_filling") == 1
    assert events.count("ledger_outbox_full") == 1
    assert events.count("ledger_outbox_admitting") == 1
    assert events.index("ledger_outbox_filling") < events.index("ledger_outbox_full")
    rows = stored_ids(pg_url)
    assert sorted(rows) == sorted(answered)  # one row each: nothing lost, nothing twice
    refused_ids = {r.headers["x-request-id"] for r in (refused, messages, responses, embeddings)}
    assert not refused_ids & set(rows)  # a refused request reached no backend: no row


async def test_an_outbox_left_full_refuses_from_the_start(tmp_path: Path) -> None:
    """A gateway restarted on the outbox a previous run filled, the database still away (a
    PostgreSQL URL whose port has nothing listening): /readyz says unavailable before any
    request, and requests are refused from the first one."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    left = Outbox(tmp_path / "outbox.db")
    left.put(entry(n) for n in range(150))  # ~1 KB each: more than twice the bound
    left.close()
    nowhere = SecretStr("postgresql+psycopg://tiergate@127.0.0.1:1/ledger")
    async with gateway(policy, database_url=nowhere, outbox_max_bytes=BOUND) as (http, app):
        ready = await http.get("/readyz")
        refused = await http.post(CHAT, json={"model": "auto", "messages": ASK})
        writer: LedgerWriter = app.state.ledger
        assert writer.outbox.size == 150
    assert ready.status_code == 503
    assert ready.json()["causes"] == ["ledger_outbox_full"]
    assert ready.json()["ledger"]["outbox"]["rows"] == 150
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "ledger_outbox_full"


async def test_workers_sharing_an_outbox_each_see_it_full(tmp_path: Path) -> None:
    """``serve --workers N`` gives every worker the same outbox file: a worker that wrote none
    of its rows still sees it full (it re-reads the file while idle), so it refuses too."""
    nowhere = "postgresql+psycopg://tiergate@127.0.0.1:1/ledger"
    bound = OutboxBound(BOUND)
    busy, idle = (
        LedgerWriter(
            make_engine(nowhere), Outbox(tmp_path / "outbox.db"), retry_s=0.05, outbox_bound=bound
        )
        for _ in range(2)
    )
    busy.start()
    idle.start()
    try:
        assert not idle.capacity.full
        for n in range(100):
            busy.record(entry(n))
        await busy.flush()
        assert busy.capacity.full
        await until(lambda: idle.capacity.full, "the idle worker to see the shared outbox full")
        assert idle.capacity.reading().rows == 100
    finally:
        await busy.aclose()
        await idle.aclose()


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("536870912", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("512Mi", 512 * 1024**2),
        ("1 GiB", 1024**3),
        ("900MB", 900 * 1000**2),
        ("64kib", 64 * 1024),
    ],
)
def test_the_bound_reads_bytes_and_sizes(given: str, size: int) -> None:
    """TIERGATE_OUTBOX_MAX_BYTES takes bytes, or a size in the units operators write (the
    Kubernetes ``Mi``/``Gi`` of an emptyDir's sizeLimit among them)."""
    assert parse_size(given) == size
    assert Settings(outbox_max_bytes=given).outbox_max_bytes == size  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("lots", "is not a size; use"),
        ("12XB", "is not a size"),
        ("-1", "is not a size"),
        ("4KiB", "too small: the outbox needs at least 64KiB"),
    ],
)
def test_a_bound_that_cannot_work_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(outbox_max_bytes=given)  # type: ignore[arg-type]
    assert says in str(caught.value)
    assert "outbox_max_bytes" in str(caught.value)

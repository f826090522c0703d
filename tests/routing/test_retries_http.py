"""Retries end to end: the real app in front of an OpenAI-compatible upstream mocked at the HTTP
layer (respx). A 429 with Retry-After is waited out and retried on the same upstream; the client
sees one answer, the ledger row both attempts (no fallback), /metrics the retry; an upstream that
fails every call gets at most ~20% more calls than requests; a stream is retried only before its
first chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateway.ledger.db import make_engine
from gateway.ledger.models import RequestRow
from gateway.routing.retry import Retrier
from gateway.tracing import in_memory
from tests.adapters.remote import _upstream as upstream
from tests.http.helpers import gateway

URL = "http://compat.upstream.test/v1"
CHAT = "/v1/chat/completions"

POLICY = f"""
version: 1
backends:
  compat: {{type: openai_compat, model: local-model, base_url: {URL}, http_client: httpx}}
tiers:
  - {{name: local, backends: [compat]}}
breaker: {{failures: 1000, cooldown_s: 30}}
"""

Handler = Callable[[httpx.Request], httpx.Response]


def failing(status: int, **headers: str) -> httpx.Response:
    body = {"error": {"message": "try again", "type": "server_error"}}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*first: httpx.Response) -> Handler:
    """Answer with ``first`` in order, then as a healthy server does."""
    queue = list(first)

    def handle(request: httpx.Request) -> httpx.Response:
        return queue.pop(0) if queue else upstream.answer(request)

    return handle


@pytest.fixture
def compat() -> Iterator[respx.Route]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.get(f"{URL}/models").respond(
            200, json={"object": "list", "data": [{"id": "local-model", "object": "model"}]}
        )
        yield router.post(f"{URL}/chat/completions")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-offs the app's retrier waits (still slept: they are tens of milliseconds)."""
    asked: list[float] = []

    async def sleep(_self: Retrier, seconds: float) -> None:
        asked.append(seconds)
        await asyncio.sleep(seconds)

    monkeypatch.setattr(Retrier, "sleep", sleep)
    return asked


def chat(stream: bool = False) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "Hi."}], "stream": stream}


def ledger_rows(policy: Path) -> list[Any]:
    engine = make_engine(f"sqlite:///{policy.parent / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(*RequestRow.__table__.columns)).all())
    finally:
        engine.dispose()


def counted(text: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[n] for n in labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY + extra)
    return path


async def test_a_429_with_retry_after_is_retried_and_recorded(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    compat.mock(side_effect=scripted(failing(429, **{"retry-after": "0.05"})))
    policy = write(tmp_path)
    async with gateway(policy) as (client, app):
        response = await client.post(CHAT, json=chat())
        assert response.status_code == 200, response.text
        metrics = (await client.get("/metrics")).text
        await app.state.ledger.flush()
    assert compat.call_count == 2
    assert waits == [0.05]
    assert "x-tiergate-fallbacks" not in response.headers
    (row,) = await asyncio.to_thread(ledger_rows, policy)
    assert (row.status, row.attempts, row.fallback_chain) == (200, 2, "compat>compat")
    assert counted(metrics, "tiergate_retries_total", "backend", "reason") == {
        ("compat", "rate_limited"): 1.0
    }
    assert counted(metrics, "tiergate_fallbacks_total", "backend") == {}  # retried, not passed on


async def test_503_twice_then_an_answer(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    compat.mock(side_effect=scripted(failing(503), failing(503)))
    async with gateway(write(tmp_path), ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 200, response.text
    assert compat.call_count == 3
    assert len(waits) == 2
    assert all(0 <= w <= 0.025 * 2**n for n, w in enumerate(waits))


async def test_a_400_is_not_retried(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    compat.mock(side_effect=scripted(failing(400)))
    async with gateway(write(tmp_path), ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 400, response.text
    assert compat.call_count == 1
    assert waits == []


async def test_the_retry_budget_bounds_the_extra_upstream_calls(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    """An upstream that answers 503 to everything: each request fails, and retries add at most
    20% of the requests plus the reserve (min_per_s 0.1 over 10 s: one), not 200%."""
    compat.mock(side_effect=lambda _request: failing(503))
    requests = 40
    started = asyncio.get_running_loop().time()
    async with gateway(write(tmp_path, "retries: {min_per_s: 0.1}\n"), ledger=False) as (
        client,
        _app,
    ):
        for _ in range(requests):
            response = await client.post(CHAT, json=chat())
            assert response.status_code == 503
    elapsed = asyncio.get_running_loop().time() - started
    extra = compat.call_count - requests
    assert 0 < extra <= 0.2 * requests + 1 + 0.1 * elapsed + 1
    assert len(waits) == extra


async def test_a_stream_is_retried_before_its_first_chunk(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    compat.mock(side_effect=scripted(failing(503)))
    async with gateway(write(tmp_path), ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat(stream=True))
    assert response.status_code == 200, response.text
    assert response.text.rstrip().endswith("data: [DONE]")
    assert compat.call_count == 2
    assert len(waits) == 1


async def test_a_stream_cut_after_its_first_chunk_is_not_retried(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    def cut(_request: httpx.Request) -> httpx.Response:
        first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        first["choices"] = [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]
        event = f"data: {json.dumps(first)}\n\n"
        # An error event mid-stream, as a server that fails while generating sends it.
        error = 'data: {"error": {"message": "server failed", "code": 500}}\n\n'
        return httpx.Response(
            200, text=event + error, headers={"content-type": "text/event-stream"}
        )

    compat.mock(side_effect=cut)
    async with gateway(write(tmp_path), ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat(stream=True))
    assert response.status_code == 200  # the headers went out with the first chunk
    assert "Hel" in response.text
    assert "error" in response.text
    assert compat.call_count == 1
    assert waits == []


async def test_each_retry_is_a_span_of_its_own(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    """A retry is another attempt span (``tiergate.retry`` counts the tries before it), and
    the request's span counts retries apart from fallbacks."""
    compat.mock(side_effect=scripted(failing(500)))
    tracing, exporter = in_memory()
    async with gateway(write(tmp_path), tracing=tracing, ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    tries = [dict(s.attributes or {}) for s in spans if s.kind is SpanKind.CLIENT]
    assert [(t["tiergate.backend"], t.get("tiergate.retry")) for t in tries] == [
        ("compat", None),
        ("compat", 1),
    ]
    (server,) = [dict(s.attributes or {}) for s in spans if s.kind is SpanKind.SERVER]
    assert server["tiergate.retries"] == 1
    assert "tiergate.fallbacks" not in server


async def test_a_retry_after_past_the_deadline_is_not_waited(
    tmp_path: Path, compat: respx.Route, waits: list[float]
) -> None:
    """Retry-After 20 s with a 10 s deadline (and max_ms raised past both): the gateway answers
    the 429 now instead of sleeping past the deadline, and passes the Retry-After on."""
    compat.mock(side_effect=lambda _request: failing(429, **{"retry-after": "20"}))
    policy = write(tmp_path, "timeouts: {total_s: 10}\nretries: {max_ms: 60000}\n")
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 429, response.text
    assert response.headers.get("retry-after") == "20"
    assert compat.call_count == 1
    assert waits == []

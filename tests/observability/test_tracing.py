"""Traces, read from the in-memory exporter: one server span per request, continuing the
client's ``traceparent``; under it the plan, the cache lookup, each attempt on a backend (GenAI
conventions) and the ledger write; the request's outcome on the server span; no text unless
asked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.tracer import FinishedSpan
from gateway.tracing import Tracing, configured, in_memory, open_tracing
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
PROMPT = "hello there friend, what is a prime number?"
SMALL_REPLY = "a small answer"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
  spare: {type: fake, model: spare-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.9, backends: [small, spare]}
  - {name: strong, backends: [big]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    small: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}
    spare: {usd_per_1m_input: 0.2, usd_per_1m_output: 0.8}
    big: {usd_per_1m_input: 1, usd_per_1m_output: 4}
cache:
  responses: {ttl_s: 60}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def backends(*, small_fails: bool = False) -> dict[str, FakeBackend]:
    small = (
        FakeBackend.scripted("small", FakeStep(error="unavailable"), model="small-model")
        if small_fails
        else FakeBackend.scripted("small", SMALL_REPLY, model="small-model")
    )
    return {
        "small": small,
        "spare": FakeBackend.scripted("spare", "a spare answer", model="spare-model"),
        "big": FakeBackend.scripted("big", "a big answer", model="big-model"),
    }


def chat(prompt: str = PROMPT, **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], **fields}


def by_name(spans: Sequence[FinishedSpan]) -> dict[str, list[FinishedSpan]]:
    named: dict[str, list[FinishedSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def server_span(spans: Sequence[FinishedSpan]) -> FinishedSpan:
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, [s.name for s in spans]
    return servers[0]


def attrs(span: FinishedSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_chat_request_is_one_trace_continuing_the_clients(policy: Path) -> None:
    tracing, exporter = in_memory()
    async with gateway(policy, backends=backends(), tracing=tracing) as (client, _app):
        response = await client.post(
            CHAT, json=chat(max_tokens=50, temperature=0), headers={"traceparent": TRACEPARENT}
        )
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    server = server_span(spans)
    assert server.name == f"POST {CHAT}"
    assert server.context is not None
    assert server.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CLIENT_SPAN
    # Every span of the request is in the client's trace, under the server span.
    named = by_name(spans)
    children = {
        "tiergate.plan",
        "tiergate.cache",  # the response cache lookup (temperature 0: cacheable)
        "tiergate.cache.prefixes",  # which of the tier's two replicas holds the prompt's prefix
        "chat small-model",
        "tiergate.ledger.write",
    }
    assert children | {server.name} == set(named)
    for name in children:
        (span,) = named[name]
        assert span.context is not None
        assert span.parent is not None
        assert span.context.trace_id == server.context.trace_id
        assert span.parent.span_id == server.context.span_id, name

    usage = response.json()["usage"]
    (attempt,) = named["chat small-model"]
    assert attempt.kind is SpanKind.CLIENT
    a = attrs(attempt)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "tiergate.fake"
    assert a["gen_ai.request.model"] == "small-model"
    assert a["gen_ai.response.model"] == "small-model"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == 0
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert (a["tiergate.backend"], a["tiergate.tier"]) == ("small", "cheap")
    assert attempt.status.status_code is StatusCode.UNSET
    assert "error.type" not in a

    s = attrs(server)
    headers = response.headers
    assert s["http.response.status_code"] == 200
    assert s["gen_ai.operation.name"] == "chat"
    assert s["gen_ai.request.model"] == "auto"
    assert s["gen_ai.response.model"] == "small-model"
    assert s["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert s["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert s["tiergate.request_id"] == headers["x-request-id"]
    assert s["tiergate.tier"] == headers["x-tiergate-tier"] == "cheap"
    assert s["tiergate.backend"] == headers["x-tiergate-backend"] == "small"
    assert f"{s['tiergate.complexity']:.3f}" == headers["x-tiergate-complexity"]
    assert s["tiergate.cache"] == headers["x-tiergate-cache"] == "miss"
    assert s["tiergate.cost_usd"] == pytest.approx(float(headers["x-tiergate-cost-usd"]))
    assert s["tiergate.baseline_cost_usd"] == pytest.approx(
        float(headers["x-tiergate-baseline-cost-usd"])
    )
    (plan,) = named["tiergate.plan"]
    assert attrs(plan)["tiergate.tier"] == "cheap"
    assert attrs(plan)["tiergate.candidates"] == ("small", "spare", "big")
    (cache,) = named["tiergate.cache"]
    assert attrs(cache)["tiergate.cache"] == "miss"
    # No text anywhere unless asked for.
    for span in spans:
        for value in attrs(span).values():
            assert "prime" not in str(value), span.name
            assert SMALL_REPLY not in str(value), span.name


async def test_a_stream_is_traced_to_its_end(policy: Path) -> None:
    tracing, exporter = in_memory()
    body = chat(stream=True, stream_options={"include_usage": True})
    async with (
        gateway(policy, backends=backends(), tracing=tracing) as (client, _app),
        client.stream("POST", CHAT, json=body) as response,
    ):
        events = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert response.status_code == 200
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2].removeprefix("data: "))["usage"]
    spans = exporter.get_finished_spans()
    server = server_span(spans)
    named = by_name(spans)
    (attempt,) = named["chat small-model"]
    a = attrs(attempt)
    assert attempt.status.status_code is StatusCode.UNSET
    assert a["tiergate.ttft_ms"] > 0
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    s = attrs(server)
    assert s["tiergate.stream"] is True
    assert s["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert s["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert s["http.response.status_code"] == 200
    # The server span ends after the stream: it encloses the attempt and the ledger write.
    (ledger,) = named["tiergate.ledger.write"]
    assert server.end_time is not None
    assert attempt.end_time is not None
    assert ledger.end_time is not None
    assert server.end_time >= attempt.end_time
    assert server.end_time >= ledger.end_time


async def test_a_failed_attempt_and_its_fallback_are_two_spans(policy: Path) -> None:
    tracing, exporter = in_memory()
    async with gateway(policy, backends=backends(small_fails=True), tracing=tracing) as (
        client,
        _app,
    ):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 200
    named = by_name(exporter.get_finished_spans())
    (failed,) = named["chat small-model"]
    (served,) = named["chat spare-model"]
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == "BackendUnavailable"
    assert served.status.status_code is StatusCode.UNSET
    assert failed.end_time is not None
    assert served.start_time is not None
    assert failed.end_time <= served.start_time
    s = attrs(server_span(exporter.get_finished_spans()))
    assert (s["tiergate.backend"], s["tiergate.fallbacks"]) == ("spare", 1)


async def test_a_cache_hit_has_no_attempt(policy: Path) -> None:
    tracing, exporter = in_memory()
    async with gateway(policy, backends=backends(), tracing=tracing) as (client, app):
        first = await client.post(CHAT, json=chat(temperature=0))
        await app.state.cache.flush()  # the answer is stored in the background
        exporter.clear()
        second = await client.post(CHAT, json=chat(temperature=0))
    assert first.status_code == second.status_code == 200
    assert second.headers["x-tiergate-cache"] == "hit"
    named = by_name(exporter.get_finished_spans())
    assert not [name for name in named if name.startswith("chat ")]
    (cache,) = named["tiergate.cache"]
    assert attrs(cache)["tiergate.cache"] == "hit"
    s = attrs(server_span(exporter.get_finished_spans()))
    assert (s["tiergate.cache"], s["tiergate.backend"]) == ("hit", "cache")


async def test_text_is_recorded_only_when_asked(policy: Path) -> None:
    tracing, exporter = in_memory(content=True)
    async with gateway(policy, backends=backends(), tracing=tracing) as (client, _app):
        response = await client.post(CHAT, json=chat())
    assert response.status_code == 200
    s = attrs(server_span(exporter.get_finished_spans()))
    sent = json.loads(s["gen_ai.input.messages"])
    answered = json.loads(s["gen_ai.output.messages"])
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    assert answered[0]["parts"][0]["content"] == SMALL_REPLY


async def test_refusals_and_probes(policy: Path) -> None:
    """A refused request has its (failed) span; an unknown path's span is named by its method
    only (names stay bounded); probes and scrapes are not traced."""
    tracing, exporter = in_memory()
    async with gateway(policy, backends=backends(), tracing=tracing) as (client, _app):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert exporter.get_finished_spans() == ()
        unknown = await client.post(CHAT, json=chat() | {"model": "no-such-route"})
        missing = await client.get("/v1/nothing/here/12345")
    assert (unknown.status_code, missing.status_code) == (400, 404)
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans if s.kind is SpanKind.SERVER]
    assert names == [f"POST {CHAT}", "GET"]
    plan = by_name(spans)["tiergate.plan"][0]
    assert plan.status.status_code is StatusCode.ERROR
    assert attrs(plan)["error.type"] == "UnknownRoute"


async def test_embeddings_are_traced(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
version: 1
backends:
  small: {type: fake, model: embed-model}
tiers:
  - {name: cheap, backends: [small]}
"""
    )
    tracing, exporter = in_memory()
    async with gateway(policy, tracing=tracing) as (client, _app):
        response = await client.post("/v1/embeddings", json={"model": "auto", "input": "a b c"})
    assert response.status_code == 200, response.text
    named = by_name(exporter.get_finished_spans())
    (attempt,) = named["embeddings embed-model"]
    assert attrs(attempt)["gen_ai.operation.name"] == "embeddings"
    assert attrs(attempt)["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    s = attrs(server_span(exporter.get_finished_spans()))
    assert s["tiergate.api"] == "embeddings"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(
    environ: dict[str, str], on: bool
) -> None:
    assert configured(environ) is on
    tracing = open_tracing(False, environ)
    assert (tracing is not None) is on
    if isinstance(tracing, Tracing):
        tracing.shutdown()


def test_an_exporter_it_does_not_have_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="http/protobuf"):
        open_tracing(
            False,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        )
    with pytest.raises(ValueError, match="one of otlp, console, none"):
        open_tracing(False, {"OTEL_TRACES_EXPORTER": "zipkin"})

"""A client's ``traceparent`` is continued through the gateway and reaches every HTTP upstream
(OpenAI-compatible server, Ollama, a hosted API through litellm), mocked at the HTTP layer: the
upstream sees the client's trace id with the gateway's attempt span as its parent. Without
tracing, nothing is sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from opentelemetry.trace import SpanKind

from adapters.remote.loader import load_litellm
from gateway.tracing import in_memory
from tests.adapters.ollama import _upstream as ollama
from tests.adapters.remote import _upstream as remote
from tests.http.helpers import gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
COMPAT_URL = "http://compat.upstream.test/v1"
TRACEPARENT_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")

POLICY = f"""
version: 1
backends:
  compat:
    type: openai_compat
    model: local-model
    base_url: {COMPAT_URL}
    http_client: httpx
  ollama: {{type: ollama, model: {ollama.MODEL}, base_url: "{ollama.BASE_URL}"}}
  hosted: {{type: remote, model: {remote.MODEL}, api_key_env: {remote.KEY_ENV}}}
tiers:
  - {{name: local, max_score: 0.5, backends: [compat, ollama]}}
  - {{name: remote, backends: [hosted]}}
"""


@pytest.fixture
def upstreams(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    lib = load_litellm()
    monkeypatch.setattr(lib, "disable_aiohttp_transport", True)  # else respx sees nothing
    monkeypatch.setenv(remote.KEY_ENV, remote.KEY)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.post(f"{COMPAT_URL}/chat/completions", name="compat").mock(side_effect=remote.answer)
        router.get(f"{COMPAT_URL}/models").respond(
            200, json={"object": "list", "data": [{"id": "local-model", "object": "model"}]}
        )
        router.post(f"{ollama.BASE_URL}/api/chat", name="ollama").mock(side_effect=ollama.chat)
        router.get(f"{ollama.BASE_URL}/api/tags").respond(200, json=ollama.tags(ollama.MODEL))
        router.post(f"{ollama.BASE_URL}/api/show").respond(200, json=ollama.show())
        router.post(remote.URL, name="hosted").mock(side_effect=remote.answer)
        yield router


def chats(router: respx.MockRouter, name: str) -> list[httpx.Request]:
    """The chat requests an upstream received (Ollama's model loads left out)."""
    return [
        c.request for c in router.routes[name].calls if b'"messages":[]' not in c.request.content
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_trace_reaches_every_http_upstream(
    tmp_path: Path, upstreams: respx.MockRouter, stream: bool
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    tracing, exporter = in_memory()
    async with gateway(policy, tracing=tracing, ledger=False) as (client, _app):
        for backend in ("compat", "ollama", "hosted"):
            body = {
                "model": backend,  # pinned
                "messages": [{"role": "user", "content": "Say something short."}],
                "stream": stream,
            }
            response = await client.post(
                "/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-tiergate-backend"] == backend
    attempts = {
        span.attributes["tiergate.backend"]: span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.CLIENT and span.attributes is not None
    }
    assert set(attempts) == {"compat", "ollama", "hosted"}
    for backend in ("compat", "ollama", "hosted"):
        (sent,) = chats(upstreams, backend)
        match = TRACEPARENT_FORMAT.match(sent.headers.get("traceparent", ""))
        assert match is not None, (backend, sent.headers)
        span = attempts[backend]
        assert span.context is not None
        assert match.group(1) == TRACE_ID, backend  # the client's trace ...
        assert match.group(2) == format(span.context.span_id, "016x"), backend  # ... our attempt
    assert attempts["hosted"].attributes is not None
    assert attempts["hosted"].attributes["gen_ai.provider.name"] == "openai"
    assert attempts["ollama"].attributes is not None
    assert attempts["ollama"].attributes["gen_ai.provider.name"] == "ollama"


async def test_without_tracing_no_trace_header_goes_upstream(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    """The client's own ``traceparent`` is not forwarded either: headers a client sends never
    reach an upstream."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with gateway(policy, ledger=False) as (client, _app):
        for backend in ("compat", "ollama", "hosted"):
            body = {"model": backend, "messages": [{"role": "user", "content": "Hi."}]}
            response = await client.post(
                "/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT}
            )
            assert response.status_code == 200, response.text
    for backend in ("compat", "ollama", "hosted"):
        (sent,) = chats(upstreams, backend)
        assert "traceparent" not in sent.headers, backend

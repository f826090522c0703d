"""The ollama adapter against Ollama's native API, mocked at the HTTP layer with respx.

Canned bodies come from Ollama's API documentation,
https://github.com/ollama/ollama/blob/main/docs/api.md (cited per body), and its error
documentation, https://docs.ollama.com/api/errors. The refused-connection tests use a real
closed local port, not a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from adapters import load_backend
from adapters.base import Backend, ChatRequest, Chunk, Message, Thinking, collect
from adapters.config import OllamaConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from adapters.ollama.backend import OllamaBackend
from adapters.ollama.models import listed
from tests.adapters.ollama import _upstream as _ollama_upstream

BASE = "http://ollama.test:11434"
MODEL = "llama3.2"

# https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-no-streaming
# (plus the done_reason every current server sends).
CHAT_RESPONSE: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2023-12-12T14:13:43.416799Z",
    "message": {"role": "assistant", "content": "Hello! How are you today?"},
    "done_reason": "stop",
    "done": True,
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 298,
    "eval_duration": 4799921000,
}

# https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-streaming
# Text lines, then the final line with the statistics. The documented final line elides
# `message`; the server always sends it (with empty content), and the client requires it.
STREAM_LINES: list[dict[str, Any]] = [
    {
        "model": "llama3.2",
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": piece, "images": None},
        "done": False,
    }
    for piece in ("The", " sky", " is", " blue", ".")
] + [
    {
        "model": "llama3.2",
        "created_at": "2023-08-04T19:22:45.499127Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342546000,
        "eval_count": 282,
        "eval_duration": 4535599000,
    }
]

# https://github.com/ollama/ollama/blob/main/docs/api.md#load-a-model-1
# (the chat variant: empty messages).
LOAD_RESPONSE: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2024-09-12T21:17:29.110811Z",
    "message": {"role": "assistant", "content": ""},
    "done_reason": "load",
    "done": True,
}

# Error bodies: the server's own texts (server/routes.go), in the shape of
# https://docs.ollama.com/api/errors.
MODEL_NOT_FOUND = {"error": 'model "llama3.2" not found, try pulling it first'}
DOES_NOT_SUPPORT_CHAT = {"error": '"llama3.2" does not support chat'}
FAILED_TO_GENERATE = {"error": "the model failed to generate a response"}
SERVER_BUSY = {"error": "server busy, please try again.  maximum pending requests exceeded"}
UNAUTHORIZED = {"error": "unauthorized", "signin_url": "https://ollama.com/connect?name=h&key=k"}
# https://docs.ollama.com/api/errors#errors-that-occur-while-streaming
MID_STREAM_ERROR = {"error": "an error was encountered while running the model"}


def ndjson(lines: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.Response(
        200, content=body.encode(), headers={"content-type": "application/x-ndjson"}
    )


def sent(route: respx.Route) -> dict[str, Any]:
    """The JSON body of the last request the route received."""
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


def config(**overrides: Any) -> OllamaConfig:
    return OllamaConfig(type="ollama", model=MODEL, base_url=BASE, **overrides)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def backend() -> AsyncIterator[OllamaBackend]:
    ollama = OllamaBackend("local", config())
    yield ollama
    await ollama.aclose()


def closed_port_url() -> str:
    """A local URL nothing listens on: bind a free port, then close it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def drain(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


# --- identity -------------------------------------------------------------------------------


def test_registry_builds_the_ollama_backend() -> None:
    """`type: ollama` in a policy resolves to this adapter, which satisfies the Backend protocol
    and reports the model, URL and context window it was configured with."""
    backend = load_backend("local", config(num_ctx=8192))
    assert isinstance(backend, OllamaBackend)
    assert isinstance(backend, Backend)
    assert backend.info.model_id == MODEL
    assert backend.info.extra["base_url"] == BASE
    assert backend.context_window == 8192
    assert OllamaBackend("x", config()).context_window is None


# --- non-streamed chat ----------------------------------------------------------------------


async def test_acomplete_round_trip(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A chat goes to /api/chat unstreamed with the model, messages, options and keep_alive;
    the answer's text, counts and nanosecond timings come back in our units."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=CHAT_RESPONSE))
    request = ChatRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hello!"),
        ),
        max_tokens=64,
        temperature=0.0,
        top_p=0.9,
        top_k=20,
        stop=("\n", "user:"),
        seed=101,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    result = await backend.acomplete(request)

    body = sent(route)
    assert body["model"] == MODEL
    assert body["stream"] is False
    assert body["keep_alive"] == "30m"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
    ]
    assert body["options"] == {
        "num_predict": 64,
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 20,
        "stop": ["\n", "user:"],
        "seed": 101,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert result.text == "Hello! How are you today?"
    assert result.finish_reason == "stop"
    assert result.backend == "local"
    assert result.model == "llama3.2"
    assert result.usage.prompt_tokens == 26
    assert result.usage.completion_tokens == 298
    assert not result.usage.estimated
    assert result.timings.server_ms == pytest.approx(5191.566416)
    assert result.timings.load_ms == pytest.approx(2.154458)
    assert result.timings.latency_ms > 0
    assert result.timings.ttft_ms is None  # not streamed: no first token to time


async def test_only_set_options_are_sent(mock: respx.MockRouter) -> None:
    """Options the request leaves unset are not sent (Ollama's model defaults apply), while
    num_ctx and keep_alive from the config always are."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=CHAT_RESPONSE))
    backend = OllamaBackend("local", config(num_ctx=8192, keep_alive=300))
    await backend.acomplete(ChatRequest.from_prompt("Hello!"))
    await backend.aclose()
    body = sent(route)
    assert body["options"] == {"num_ctx": 8192}
    assert body["keep_alive"] == 300


async def test_no_options_at_all(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """With nothing set and no num_ctx, the body carries no options object."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=CHAT_RESPONSE))
    await backend.acomplete(ChatRequest.from_prompt("Hello!"))
    assert "options" not in sent(route)


async def test_tool_result_name_becomes_tool_name(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """A tool result's name is sent as Ollama's tool_name field."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=CHAT_RESPONSE))
    await backend.acomplete(
        ChatRequest(
            messages=(
                Message(role="user", content="Weather in Paris?"),
                Message(role="tool", content="22 C", name="get_current_weather"),
            )
        )
    )
    assert sent(route)["messages"][1] == {
        "role": "tool",
        "content": "22 C",
        "tool_name": "get_current_weather",
    }


async def test_length_when_num_predict_is_hit(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """done_reason "length" (num_predict reached) is reported as finish_reason "length"."""
    body = {**CHAT_RESPONSE, "done_reason": "length", "eval_count": 5}
    mock.post("/api/chat").mock(return_value=httpx.Response(200, json=body))
    result = await backend.acomplete(ChatRequest.from_prompt("Hello!", max_tokens=5))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5


async def test_missing_counts_are_estimated(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """When Ollama leaves a count out the usage is an estimate, marked as one, never zero."""
    body = {k: v for k, v in CHAT_RESPONSE.items() if k not in ("prompt_eval_count", "eval_count")}
    mock.post("/api/chat").mock(return_value=httpx.Response(200, json=body))
    result = await backend.acomplete(ChatRequest.from_prompt("Why is the sky blue?"))
    assert result.usage.estimated
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0


def test_complete_returns_only_generated_text(mock: respx.MockRouter) -> None:
    """The blocking teaching contract (over acomplete): only the reply, Ollama's counts, and the
    prompt's sampling settings mapped into options."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=CHAT_RESPONSE))
    backend = OllamaBackend("local", config())
    result = backend.complete("Say hello.", max_new_tokens=12, temperature=0.5, top_k=40)
    asyncio.run(backend.aclose())
    body = sent(route)
    assert body["stream"] is False
    assert body["messages"] == [{"role": "user", "content": "Say hello."}]
    assert body["options"] == {"num_predict": 12, "temperature": 0.5, "top_k": 40}
    assert result.completion == "Hello! How are you today?"
    assert result.prompt == "Say hello."
    assert result.prompt_tokens == 26
    assert result.completion_tokens == 298
    assert result.backend == "local"
    assert result.latency_ms > 0
    assert result.metadata["server_ms"] == pytest.approx(5191.566416)
    assert result.metadata["load_ms"] == pytest.approx(2.154458)


# --- streamed chat --------------------------------------------------------------------------


async def test_astream_round_trip(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """NDJSON lines become text chunks; the final line supplies finish reason, counts and
    timings, and the request asked for a stream."""
    route = mock.post("/api/chat").mock(return_value=ndjson(STREAM_LINES))
    chunks = await drain(backend.astream(ChatRequest.from_prompt("Why is the sky blue?")))

    assert sent(route)["stream"] is True
    assert [c.delta for c in chunks[:-1]] == ["The", " sky", " is", " blue", "."]
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (26, 282)
    assert final.timings is not None
    assert final.timings.server_ms == pytest.approx(4883.583458)
    assert final.timings.load_ms == pytest.approx(1.334875)
    assert final.timings.ttft_ms is not None
    assert 0 < final.timings.ttft_ms <= final.timings.latency_ms


async def test_stream_collects_to_the_whole_text(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """Joining the stream gives the full reply with the final line's usage."""
    mock.post("/api/chat").mock(return_value=ndjson(STREAM_LINES))
    whole = await collect("local", MODEL, backend.astream(ChatRequest.from_prompt("Why?")))
    assert whole.text == "The sky is blue."
    assert whole.usage.completion_tokens == 282


async def test_empty_leading_lines_yield_no_chunk(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """Lines with neither content nor thinking yield no chunk (a thinking model's reasoning
    lines do: tests/adapters/ollama/test_thinking.py)."""
    empty = {**STREAM_LINES[0], "message": {"role": "assistant", "content": ""}}
    mock.post("/api/chat").mock(return_value=ndjson([empty, empty, *STREAM_LINES]))
    chunks = await drain(backend.astream(ChatRequest.from_prompt("Why?")))
    assert chunks[0].delta == "The"
    assert "".join(c.delta for c in chunks) == "The sky is blue."


async def test_error_line_mid_stream(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """An {"error": ...} line after some text ends the stream with BackendUnavailable that
    quotes Ollama and points at its log; the text before it was delivered."""
    mock.post("/api/chat").mock(return_value=ndjson([*STREAM_LINES[:2], MID_STREAM_ERROR]))
    received: list[str] = []

    async def consume() -> None:
        async for chunk in backend.astream(ChatRequest.from_prompt("Why?")):
            received.append(chunk.delta)

    with pytest.raises(BackendUnavailable, match="error was encountered") as caught:
        await consume()
    assert received == ["The", " sky"]
    assert "server log" in caught.value.message


async def test_stream_cut_before_done(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A stream that ends without its "done" line is a bad response, not a short answer."""
    mock.post("/api/chat").mock(return_value=ndjson(STREAM_LINES[:3]))
    with pytest.raises(BackendBadResponse, match="without its final"):
        await drain(backend.astream(ChatRequest.from_prompt("Why?")))


async def test_malformed_ndjson_line(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A line that is not JSON is a BackendBadResponse naming what to check."""
    good = json.dumps(STREAM_LINES[0]) + "\n"
    mock.post("/api/chat").mock(
        return_value=httpx.Response(200, content=(good + "<html>oops\n").encode())
    )
    with pytest.raises(BackendBadResponse, match="base_url"):
        await drain(backend.astream(ChatRequest.from_prompt("Why?")))


class _TrackedStream(httpx.AsyncByteStream):
    """A long NDJSON body (text lines, no end) that records whether the client closed it."""

    LINES = 1000

    def __init__(self) -> None:
        self.closed = False
        self.lines_sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.LINES):
            self.lines_sent += 1
            yield (json.dumps(STREAM_LINES[0]) + "\n").encode()

    async def aclose(self) -> None:
        self.closed = True


async def test_closing_the_stream_closes_the_upstream_response(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """A consumer that stops reading and closes the stream closes the HTTP response, which is
    how Ollama learns to stop generating."""
    body = _TrackedStream()
    mock.post("/api/chat").mock(return_value=httpx.Response(200, stream=body))
    async with contextlib.aclosing(backend.astream(ChatRequest.from_prompt("Go on"))) as stream:
        async for chunk in stream:
            assert chunk.delta == "The"
            break
    assert body.closed
    assert body.lines_sent < 10


async def test_stream_past_timeout(mock: respx.MockRouter) -> None:
    """A stream still running after timeout_s ends with BackendTimeout and closes upstream."""
    body = _TrackedStream()
    mock.post("/api/chat").mock(return_value=httpx.Response(200, stream=body))
    backend = OllamaBackend("local", config(timeout_s=1e-6))
    with pytest.raises(BackendTimeout, match="timeout_s"):
        await drain(backend.astream(ChatRequest.from_prompt("Go on")))
    await backend.aclose()
    assert body.closed


# --- errors ---------------------------------------------------------------------------------


ERROR_CASES = [
    pytest.param(404, MODEL_NOT_FOUND, BackendUnavailable, "ollama pull llama3.2", id="404-model"),
    pytest.param(404, "404 page not found", BackendUnavailable, "without /api or /v1", id="404"),
    pytest.param(400, DOES_NOT_SUPPORT_CHAT, BackendRejected, "does not support chat", id="400"),
    pytest.param(500, FAILED_TO_GENERATE, BackendUnavailable, "server log", id="500"),
    pytest.param(503, SERVER_BUSY, BackendRateLimited, "OLLAMA_MAX_QUEUE", id="503-busy"),
    pytest.param(429, {"error": "too many requests"}, BackendRateLimited, "busy", id="429"),
    pytest.param(401, UNAUTHORIZED, BackendRejected, "OLLAMA_API_KEY", id="401"),
]


def error_response(status: int, body: dict[str, str] | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body)
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(("status", "body", "error", "hint"), ERROR_CASES)
async def test_error_status_acomplete(
    mock: respx.MockRouter,
    backend: OllamaBackend,
    status: int,
    body: dict[str, str] | str,
    error: type[BackendError],
    hint: str,
) -> None:
    """Each HTTP error status maps to our error type, with a message that says what to do."""
    mock.post("/api/chat").mock(return_value=error_response(status, body))
    with pytest.raises(error, match=re.escape(hint)) as caught:
        await backend.acomplete(ChatRequest.from_prompt("Hi"))
    assert caught.value.backend == "local"
    # The status tells the router a 5xx (retried on this backend) from a missing model (404).
    assert caught.value.status_code == (None if status == 404 else status)
    if isinstance(caught.value, BackendRejected):
        assert caught.value.status_code == status
        assert not caught.value.retryable


@pytest.mark.parametrize(("status", "body", "error", "hint"), ERROR_CASES)
async def test_error_status_astream(
    mock: respx.MockRouter,
    backend: OllamaBackend,
    status: int,
    body: dict[str, str] | str,
    error: type[BackendError],
    hint: str,
) -> None:
    """A streamed request refused before its first line maps the same way."""
    mock.post("/api/chat").mock(return_value=error_response(status, body))
    with pytest.raises(error, match=re.escape(hint)):
        await drain(backend.astream(ChatRequest.from_prompt("Hi")))


def test_error_status_sync_complete(mock: respx.MockRouter) -> None:
    """The blocking path translates errors too: a missing model says to pull it."""
    mock.post("/api/chat").mock(return_value=httpx.Response(404, json=MODEL_NOT_FOUND))
    backend = OllamaBackend("local", config())
    with pytest.raises(BackendUnavailable, match=re.escape("ollama pull llama3.2")):
        backend.complete("Hi")
    asyncio.run(backend.aclose())


async def test_malformed_json_body(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A 200 whose body is not JSON is a BackendBadResponse."""
    mock.post("/api/chat").mock(return_value=httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(BackendBadResponse, match="not /api/chat JSON"):
        await backend.acomplete(ChatRequest.from_prompt("Hi"))


async def test_json_of_the_wrong_shape(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A 200 with JSON that is not a chat response (no message) is a BackendBadResponse."""
    mock.post("/api/chat").mock(return_value=httpx.Response(200, json={"object": "list"}))
    with pytest.raises(BackendBadResponse):
        await backend.acomplete(ChatRequest.from_prompt("Hi"))


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect timed out")]
)
async def test_http_timeouts(
    mock: respx.MockRouter, backend: OllamaBackend, exc: httpx.TimeoutException
) -> None:
    """httpx timeouts become BackendTimeout, suggesting a longer timeout_s or a prewarm."""
    mock.post("/api/chat").mock(side_effect=exc)
    with pytest.raises(BackendTimeout, match="raise `timeout_s`"):
        await backend.acomplete(ChatRequest.from_prompt("Hi"))
    with pytest.raises(BackendTimeout):
        await drain(backend.astream(ChatRequest.from_prompt("Hi")))


async def test_dropped_connection(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A connection the server drops is BackendUnavailable, not an httpx error."""
    mock.post("/api/chat").mock(side_effect=httpx.RemoteProtocolError("peer closed"))
    with pytest.raises(BackendUnavailable, match="RemoteProtocolError"):
        await backend.acomplete(ChatRequest.from_prompt("Hi"))


async def test_refused_connection_everywhere() -> None:
    """With nothing listening at base_url (a real closed port), every call path says Ollama is
    not reachable there and how to start it; health reports it instead of raising."""
    url = closed_port_url()
    backend = OllamaBackend("local", OllamaConfig(type="ollama", model=MODEL, base_url=url))
    request = ChatRequest.from_prompt("Hi")
    hint = f"not reachable at {url}: start it with `ollama serve`"
    with pytest.raises(BackendUnavailable, match=re.escape(hint)):
        await backend.acomplete(request)
    with pytest.raises(BackendUnavailable, match=re.escape(hint)):
        await drain(backend.astream(request))
    with pytest.raises(BackendUnavailable, match=re.escape(hint)):
        await backend.prewarm()
    with pytest.raises(BackendUnavailable, match=re.escape(hint)):
        backend.complete("Hi")
    health = await backend.health()
    assert not health.ok
    assert "ollama serve" in health.detail
    assert "base_url" in health.detail
    await backend.aclose()


async def test_closed_backend_refuses(backend: OllamaBackend) -> None:
    """After aclose, calls fail fast as unavailable and health says so."""
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.acomplete(ChatRequest.from_prompt("Hi"))
    assert not (await backend.health()).ok


# --- prewarm and health ---------------------------------------------------------------------


async def test_prewarm_loads_with_empty_messages(mock: respx.MockRouter) -> None:
    """prewarm sends Ollama's documented load request (no messages) with keep_alive and the
    configured num_ctx, and records how long the load took."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=LOAD_RESPONSE))
    mock.post("/api/show").mock(return_value=httpx.Response(200, json=_ollama_upstream.show()))
    backend = OllamaBackend("local", config(num_ctx=8192, keep_alive="1h"))
    await backend.prewarm()
    await backend.aclose()
    body = sent(route)
    assert body["model"] == MODEL
    assert body["messages"] == []
    assert body["keep_alive"] == "1h"
    assert body["options"] == {"num_ctx": 8192}
    assert body["stream"] is False
    assert backend.info.extra["prewarm_ms"] > 0


async def test_prewarm_missing_model(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """prewarm of a model the server lacks raises BackendUnavailable with the pull command."""
    mock.post("/api/chat").mock(return_value=httpx.Response(404, json=MODEL_NOT_FOUND))
    with pytest.raises(BackendUnavailable, match=re.escape("ollama pull llama3.2")):
        await backend.prewarm()


async def test_health_ok(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """Health lists the server's models (GET /api/tags): present, as the implied :latest,
    means ok."""
    route = mock.get("/api/tags").mock(
        return_value=httpx.Response(200, json=_ollama_upstream.tags(MODEL))
    )
    health = await backend.health()
    assert route.called
    assert health.ok
    assert health.latency_ms is not None


async def test_health_model_missing(mock: respx.MockRouter) -> None:
    """A model the server does not list gives ok=False, the pull command and what it has."""
    mock.get("/api/tags").mock(return_value=httpx.Response(200, json=_ollama_upstream.tags(MODEL)))
    backend = OllamaBackend("local", OllamaConfig(type="ollama", model="qwen3:4b", base_url=BASE))
    health = await backend.health()
    await backend.aclose()
    assert not health.ok
    assert "ollama pull qwen3:4b" in health.detail
    assert "llama3.2:latest" in health.detail


async def test_health_server_error(mock: respx.MockRouter, backend: OllamaBackend) -> None:
    """A failing server is reported by health, never raised."""
    mock.get("/api/tags").mock(return_value=httpx.Response(500, json=FAILED_TO_GENERATE))
    health = await backend.health()
    assert not health.ok
    assert "server log" in health.detail


@pytest.mark.parametrize(
    ("model", "names", "expected"),
    [
        ("llama3.2", ["llama3.2:latest"], True),
        ("llama3.2:latest", ["llama3.2:latest"], True),
        ("llama3.2:1b", ["llama3.2:latest"], False),
        ("llama3.2", ["llama3.2:1b"], False),
        ("registry.local:5000/team/m", ["registry.local:5000/team/m:latest"], True),
    ],
)
def test_listed_allows_for_the_implied_latest_tag(
    model: str, names: list[str], expected: bool
) -> None:
    """A model name without a tag matches its :latest entry, and only that."""
    assert listed(model, names) is expected


# --- the contract-test upstream -------------------------------------------------------------


async def test_upstream_helper_serves_every_call_path() -> None:
    """The fake Ollama for the contract test answers acomplete, astream, complete, prewarm and
    health plausibly, honouring max_tokens and stop."""
    async with _ollama_upstream.upstream() as backend:
        assert (await backend.health()).ok
        await backend.prewarm()
        short = await backend.acomplete(ChatRequest.from_prompt("Hi", max_tokens=3))
        assert short.text == "The fake Ollama"
        assert short.finish_reason == "length"
        assert short.usage.completion_tokens == 3
        chunks = await drain(backend.astream(ChatRequest.from_prompt("Hi")))
        assert len(chunks) > 3
        assert chunks[-1].finish_reason == "stop"
        whole = "".join(c.delta for c in chunks)
        stopped = await backend.acomplete(ChatRequest.from_prompt("Hi", stop=(" request",)))
        assert stopped.text == whole[: whole.index(" request")]
        result = backend.complete("Hi", max_new_tokens=2)
        assert result.completion == "The fake"
        assert result.completion_tokens == 2


# --- extended thinking ------------------------------------------------------------------------

# https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-with-thinking: a thinking
# model's answer carries its reasoning in ``message.thinking``, apart from the content.
THINKING_RESPONSE: dict[str, Any] = {
    **CHAT_RESPONSE,
    "model": "qwen3",
    "message": {
        "role": "assistant",
        "content": "The sky is blue because of Rayleigh scattering.",
        "thinking": "The user asks why the sky is blue. Shorter wavelengths scatter more...",
    },
}
ABSENT = "(absent)"
ENABLED = Thinking("enabled", budget_tokens=2048)


@pytest.mark.parametrize(
    ("capabilities", "thinking", "think"),
    [
        pytest.param(["completion", "thinking"], ENABLED, True, id="enabled"),
        pytest.param(["completion", "thinking"], Thinking("adaptive"), True, id="adaptive"),
        pytest.param(["completion", "thinking"], Thinking("disabled"), False, id="disabled"),
        pytest.param(["completion", "thinking"], None, ABSENT, id="unset"),
        # Ollama answers ``think`` with a 400 for a model that cannot think: never sent.
        pytest.param(["completion", "tools"], ENABLED, ABSENT, id="model-cannot-think"),
    ],
)
async def test_thinking_is_think_for_a_model_that_can_think(
    mock: respx.MockRouter, capabilities: list[str], thinking: Thinking | None, think: object
) -> None:
    """A request's extended thinking is Ollama's ``think`` (on for enabled or adaptive, off for
    disabled) when ``/api/show`` lists ``thinking``, whole and streamed; otherwise left out.
    The answer is the content: the model's ``thinking`` does not leak into it."""
    chat = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=THINKING_RESPONSE))
    shown = _ollama_upstream.show(capabilities)
    mock.post("/api/show").mock(return_value=httpx.Response(200, json=shown))
    backend = OllamaBackend("local", config())
    await backend.prewarm()  # reads /api/show
    request = dataclasses.replace(
        ChatRequest.from_prompt("Why is the sky blue?"), thinking=thinking
    )
    answer = await backend.acomplete(request)
    whole = sent(chat)
    chat.mock(return_value=ndjson(STREAM_LINES))
    await drain(backend.astream(request))
    streamed = sent(chat)
    await backend.aclose()
    assert answer.text == "The sky is blue because of Rayleigh scattering."
    for body in (whole, streamed):
        assert body.get("think", ABSENT) == think
        assert "think" not in (body.get("options") or {})

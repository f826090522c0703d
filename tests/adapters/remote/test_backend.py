"""The remote adapter against respx-mocked OpenAI and Anthropic APIs (no network).

Canned bodies follow the providers' API references (URLs next to each). litellm's default
aiohttp transport bypasses httpx, so an autouse fixture switches it to httpx, where respx
intercepts every request; respx fails any request no route matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from adapters.base import Backend, ChatRequest, Message
from adapters.config import RemoteConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from adapters.remote.backend import RemoteBackend
from adapters.remote.errors import redact
from adapters.remote.loader import load_litellm
from adapters.remote.pricing_map import ModelPrice
from tests.adapters.remote._upstream import upstream

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
KEY_ENV = "TIERGATE_TEST_REMOTE_KEY"
SECRET = "sk-proj-TESTSECRET-0123456789abcdef"
GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5-20251001"

# https://platform.openai.com/docs/api-reference/chat/object (cached_tokens as described in
# https://platform.openai.com/docs/guides/prompt-caching)
OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 12, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}
# https://platform.openai.com/docs/api-reference/debugging-requests
OPENAI_HEADERS = {"openai-processing-ms": "321", "x-request-id": "req_123"}


def openai_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    """One SSE event of https://platform.openai.com/docs/api-reference/chat-streaming/streaming
    (``delta=None``: the final usage-only chunk, whose ``choices`` is empty)."""
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    ]  # fmt: skip
    body = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": choices,
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


OPENAI_STREAM = (
    openai_chunk({"role": "assistant", "content": ""})
    + openai_chunk({"content": "Hello"})
    + openai_chunk({"content": " there"})
    + openai_chunk({}, "length")
    + openai_chunk(
        None,
        usage={
            "prompt_tokens": 9,
            "completion_tokens": 2,
            "total_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    )
    + "data: [DONE]\n\n"
)

# https://docs.anthropic.com/en/api/messages (response) with the usage fields of
# https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching
ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1500,
        "output_tokens": 41,
    },
}


def openai_error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """The error body of https://platform.openai.com/docs/guides/error-codes."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.fixture(autouse=True)
def _httpx_transport() -> Iterator[None]:
    lib = load_litellm()
    saved = lib.disable_aiohttp_transport
    lib.disable_aiohttp_transport = True
    yield
    lib.disable_aiohttp_transport = saved


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def backend(model: str = GPT, **config: Any) -> RemoteBackend:
    return RemoteBackend(
        "hosted", RemoteConfig(type="remote", model=model, api_key_env=KEY_ENV, **config)
    )


def chat(**fields: Any) -> ChatRequest:
    return ChatRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Say hello."),
        ),
        **fields,
    )


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


class TestOpenAI:
    async def test_acomplete_maps_request_and_answer(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A chat request reaches OpenAI with its fields and the named key; the answer maps to
        text, finish reason, usage with cached tokens, and the server-reported time."""
        route = router.post(OPENAI_URL).respond(200, json=OPENAI_COMPLETION, headers=OPENAI_HEADERS)

        result = await backend().acomplete(
            chat(
                max_tokens=32,
                temperature=0.2,
                top_p=0.9,
                top_k=5,
                stop=("\n\n",),
                seed=7,
                presence_penalty=0.5,
                frequency_penalty=-0.25,
            )
        )

        body = sent(route)
        assert body["model"] == "gpt-4o-mini"
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ]
        assert body["max_tokens"] == 32
        assert body["temperature"] == 0.2
        assert body["top_p"] == 0.9
        assert body["stop"] == ["\n\n"]
        assert body["seed"] == 7
        assert body["presence_penalty"] == 0.5
        assert body["frequency_penalty"] == -0.25
        assert "top_k" not in body  # OpenAI rejects it; dropped, not forwarded
        assert "stream" not in body
        assert route.calls.last.request.headers["authorization"] == f"Bearer {key}"
        assert result.text == "Hello! How can I assist you today?"
        assert result.finish_reason == "stop"
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (19, 10)
        assert result.usage.cached_tokens == 12
        assert not result.usage.estimated
        assert result.timings.server_ms == 321.0
        assert result.timings.latency_ms > 0
        assert (result.backend, result.model) == ("hosted", GPT)

    async def test_astream_yields_text_then_usage(self, router: respx.MockRouter, key: str) -> None:
        """A stream asks for usage, yields each text delta, and ends with one chunk carrying
        finish reason, usage and timings."""
        route = router.post(OPENAI_URL).respond(
            200, text=OPENAI_STREAM, headers={**OPENAI_HEADERS, "content-type": "text/event-stream"}
        )

        async with aclosing(backend().astream(chat(max_tokens=2))) as stream:
            chunks = [chunk async for chunk in stream]

        body = sent(route)
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 2
        assert route.calls.last.request.headers["authorization"] == f"Bearer {key}"
        assert [c.delta for c in chunks[:-1]] == ["Hello", " there"]
        last = chunks[-1]
        assert last.delta == ""
        assert last.finish_reason == "length"
        assert last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 2)
        assert last.usage.cached_tokens == 4
        assert last.timings is not None
        assert last.timings.ttft_ms is not None
        assert 0 < last.timings.ttft_ms <= last.timings.latency_ms
        assert last.timings.server_ms == 321.0

    def test_sync_complete_returns_inference_result(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """The blocking teaching ``complete()`` sends one user turn and returns only the text."""
        route = router.post(OPENAI_URL).respond(200, json=OPENAI_COMPLETION, headers=OPENAI_HEADERS)

        result = backend().complete("Say hello.", max_new_tokens=16, temperature=0.0)

        body = sent(route)
        assert body["messages"] == [{"role": "user", "content": "Say hello."}]
        assert body["max_tokens"] == 16
        assert body["temperature"] == 0.0
        assert route.calls.last.request.headers["authorization"] == f"Bearer {key}"
        assert result.completion == "Hello! How can I assist you today?"
        assert (result.prompt_tokens, result.completion_tokens) == (19, 10)
        assert result.backend == "hosted"
        assert result.metadata["server_ms"] == 321.0
        assert result.metadata["cached_tokens"] == 12

    async def test_api_base_redirects_the_request(self, router: respx.MockRouter, key: str) -> None:
        """``api_base`` sends the request to that URL instead of the provider's default."""
        route = router.post("https://llm.example.test/v1/chat/completions").respond(
            200, json=OPENAI_COMPLETION
        )

        result = await backend(api_base="https://llm.example.test/v1").acomplete(chat())

        assert route.called
        assert result.text == "Hello! How can I assist you today?"


class TestAnthropic:
    async def test_acomplete_reports_cache_reads(self, router: respx.MockRouter, key: str) -> None:
        """An Anthropic answer's ``cache_read_input_tokens`` become cached tokens; the key goes
        in ``x-api-key``, the system turn to ``system``, and top_k is forwarded; the penalties,
        which Anthropic's API does not have, are dropped (a 400 there otherwise)."""
        route = router.post(ANTHROPIC_URL).respond(200, json=ANTHROPIC_MESSAGE)

        result = await backend(CLAUDE).acomplete(
            chat(max_tokens=64, top_k=5, presence_penalty=0.5, frequency_penalty=0.5)
        )

        body = sent(route)
        request = route.calls.last.request
        assert request.headers["x-api-key"] == key
        assert body["model"] == "claude-haiku-4-5-20251001"
        assert body["max_tokens"] == 64
        assert body["top_k"] == 5
        assert "presence_penalty" not in body
        assert "frequency_penalty" not in body
        assert body["system"] == [{"type": "text", "text": "Be brief."}]
        assert [m["role"] for m in body["messages"]] == ["user"]
        assert result.text == "Hi! My name is Claude."
        assert result.finish_reason == "stop"
        assert result.usage.cached_tokens == 1500
        assert result.usage.completion_tokens == 41
        # litellm reports OpenAI's convention: prompt tokens include the cached ones.
        assert result.usage.prompt_tokens == 1510
        assert result.timings.server_ms is None


class TestErrors:
    async def test_rate_limit_carries_retry_after(self, router: respx.MockRouter, key: str) -> None:
        """HTTP 429 with ``retry-after: 7`` becomes BackendRateLimited(retry_after=7), once:
        litellm's own retries are off."""
        route = router.post(OPENAI_URL).respond(
            429,
            json=openai_error(
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3.",
                "requests",
                "rate_limit_exceeded",
            ),
            headers={"retry-after": "7"},
        )

        with pytest.raises(BackendRateLimited) as caught:
            await backend().acomplete(chat())

        assert caught.value.retry_after == 7.0
        assert "Rate limit reached" in caught.value.message
        assert route.call_count == 1

    async def test_anthropic_rate_limit_in_a_stream(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """Anthropic's 429 (https://docs.anthropic.com/en/api/errors) on a stream is mapped too."""
        router.post(ANTHROPIC_URL).respond(
            429,
            json={
                "type": "error",
                "error": {"type": "rate_limit_error", "message": "Number of requests too high"},
            },
            headers={"retry-after": "12"},
        )

        with pytest.raises(BackendRateLimited) as caught:
            async with aclosing(backend(CLAUDE).astream(chat(max_tokens=8))) as stream:
                _ = [chunk async for chunk in stream]

        assert caught.value.retry_after == 12.0
        assert "Number of requests too high" in caught.value.message

    async def test_server_error_is_unavailable(self, router: respx.MockRouter, key: str) -> None:
        """HTTP 500 from the provider is BackendUnavailable, which the router may retry."""
        router.post(OPENAI_URL).respond(
            500,
            json=openai_error(
                "The server had an error while processing your request.", "server_error", None
            ),
        )

        with pytest.raises(BackendUnavailable) as caught:
            await backend().acomplete(chat())

        assert "HTTP 500" in caught.value.message
        assert caught.value.retryable
        assert caught.value.status_code == 500  # a 5xx: the router retries it on this backend

    async def test_bad_key_is_rejected_without_leaking_it(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """HTTP 401 is BackendRejected naming the variable to check; neither the key nor the
        masked copy OpenAI echoes appears in the error."""
        masked = f"{key[:8]}{'*' * 20}{key[-4:]}"
        router.post(OPENAI_URL).respond(
            401,
            json=openai_error(
                f"Incorrect API key provided: {masked}. You can find your API key at "
                f"https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        )

        with pytest.raises(BackendRejected) as caught:
            await backend().acomplete(chat())

        error = caught.value
        assert error.status_code == 401
        assert f"${KEY_ENV}" in error.message
        assert "Incorrect API key provided" in error.message
        for text in (str(error), repr(error), error.message):
            assert key not in text
            assert masked not in text
            assert key[3:12] not in text

    async def test_missing_env_var_names_it(
        self, router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset key variable is BackendUnavailable naming it, and nothing is sent."""
        monkeypatch.delenv(KEY_ENV, raising=False)
        route = router.post(OPENAI_URL).respond(200, json=OPENAI_COMPLETION)

        with pytest.raises(BackendUnavailable) as caught:
            await backend().acomplete(chat())

        assert KEY_ENV in caught.value.message
        assert not route.called
        health = await backend().health()
        assert not health.ok
        assert KEY_ENV in health.detail

    async def test_malformed_body_is_bad_response(self, router: respx.MockRouter, key: str) -> None:
        """A 200 answer that is not a chat completion (a proxy's HTML page) is
        BackendBadResponse, not an upstream outage."""
        router.post(OPENAI_URL).respond(
            200,
            text="<html><body>Welcome to nginx!</body></html>",
            headers={"content-type": "text/html"},
        )

        with pytest.raises(BackendBadResponse):
            await backend().acomplete(chat())

    async def test_malformed_stream_is_bad_response(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A stream with neither text nor usage is BackendBadResponse, not an empty answer."""
        router.post(OPENAI_URL).respond(
            200,
            text="<html><body>Welcome to nginx!</body></html>",
            headers={"content-type": "text/html"},
        )

        with pytest.raises(BackendBadResponse):
            async with aclosing(backend().astream(chat())) as stream:
                _ = [chunk async for chunk in stream]

    @pytest.mark.parametrize(
        ("response", "expected", "status"),
        [
            pytest.param(
                httpx.Response(
                    404,
                    json=openai_error(
                        "The model `gpt-4o-mini` does not exist or you do not have access to it.",
                        "invalid_request_error",
                        "model_not_found",
                    ),
                ),
                BackendUnavailable,
                None,
                id="404-model",
            ),
            pytest.param(
                httpx.Response(
                    400,
                    json=openai_error(
                        "This model's maximum context length is 128000 tokens. However, your "
                        "messages resulted in 130000 tokens.",
                        "invalid_request_error",
                        "context_length_exceeded",
                    ),
                ),
                BackendRejected,
                400,
                id="400-context",
            ),
            pytest.param(
                httpx.Response(
                    503,
                    json=openai_error("The engine is currently overloaded.", "server_error", None),
                ),
                BackendUnavailable,
                None,
                id="503",
            ),
        ],
    )
    async def test_status_mapping(
        self,
        router: respx.MockRouter,
        key: str,
        response: httpx.Response,
        expected: type[BackendError],
        status: int | None,
    ) -> None:
        """Each documented failure status maps onto the error the router acts on."""
        router.post(OPENAI_URL).mock(return_value=response)

        with pytest.raises(expected) as caught:
            await backend().acomplete(chat())

        if status is not None:
            assert isinstance(caught.value, BackendRejected)
            assert caught.value.status_code == status
            assert not caught.value.retryable

    async def test_context_window_error_states_the_window(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A context-length refusal tells the window size from the price map and what to do."""
        router.post(OPENAI_URL).respond(
            400,
            json=openai_error(
                "This model's maximum context length is 128000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
        )

        with pytest.raises(BackendRejected) as caught:
            await backend().acomplete(chat())

        assert "128000 tokens" in caught.value.message
        assert "shorten" in caught.value.message

    async def test_unreachable_provider_is_unavailable(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A refused connection is BackendUnavailable."""
        router.post(OPENAI_URL).mock(side_effect=httpx.ConnectError("Connection refused"))

        with pytest.raises(BackendUnavailable) as caught:
            await backend().acomplete(chat())

        assert "could not reach" in caught.value.message

    async def test_read_timeout_is_timeout(self, router: respx.MockRouter, key: str) -> None:
        """A read timeout is BackendTimeout naming the configured limit."""
        router.post(OPENAI_URL).mock(side_effect=httpx.ReadTimeout("timed out"))

        with pytest.raises(BackendTimeout) as caught:
            await backend(timeout_s=3.5).acomplete(chat())

        assert "timeout_s=3.5" in caught.value.message

    async def test_anthropic_overload_is_unavailable(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """Anthropic's 529 overloaded_error (https://docs.anthropic.com/en/api/errors) is
        BackendUnavailable."""
        router.post(ANTHROPIC_URL).respond(
            529,
            json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )

        with pytest.raises(BackendUnavailable) as caught:
            await backend(CLAUDE).acomplete(chat(max_tokens=8))

        assert "HTTP 529" in caught.value.message

    async def test_unknown_provider_is_unavailable(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A model litellm cannot place with a provider fails before any request, with a fix."""
        with pytest.raises(BackendUnavailable) as caught:
            await backend("not-a-provider/some-model").acomplete(chat())

        assert "provider/model" in caught.value.message

    async def test_closed_backend_refuses(self, router: respx.MockRouter, key: str) -> None:
        """After ``aclose`` the backend refuses requests instead of sending them."""
        route = router.post(OPENAI_URL).respond(200, json=OPENAI_COMPLETION)
        remote = backend()
        await remote.aclose()

        with pytest.raises(BackendUnavailable):
            await remote.acomplete(chat())

        assert not route.called


class TestRedaction:
    def test_redact_removes_key_shapes(self) -> None:
        """Secrets, sk- keys, masked keys and bearer tokens are all replaced."""
        text = redact(
            "key sk-abc123def456, masked sk-a****f456, Authorization: Bearer xyz789, "
            "own hunter2secret",
            ["hunter2secret"],
        )
        assert "abc123" not in text
        assert "****" not in text
        assert "xyz789" not in text
        assert "hunter2secret" not in text


class TestPrice:
    async def test_price_comes_from_the_bundled_map(self, router: respx.MockRouter) -> None:
        """gpt-4o-mini's prices and window equal litellm's bundled JSON, read without any
        request (respx fails unmocked ones)."""
        lib = load_litellm()
        bundled = json.loads(
            (Path(lib.__file__).parent / "model_prices_and_context_window_backup.json").read_text()
        )["gpt-4o-mini"]

        price = backend().price

        assert price == ModelPrice(
            model=GPT,
            input_usd_per_token=bundled["input_cost_per_token"],
            output_usd_per_token=bundled["output_cost_per_token"],
            cache_read_usd_per_token=bundled["cache_read_input_token_cost"],
            context_window=bundled["max_input_tokens"],
        )
        assert price.known
        assert lib.model_cost["gpt-4o-mini"]["input_cost_per_token"] == price.input_usd_per_token
        assert backend().context_window == bundled["max_input_tokens"]
        assert not router.calls

    def test_unknown_model_has_no_price(self) -> None:
        """A model absent from the map prices as all-None rather than failing."""
        price = backend("openai/tiergate-no-such-model").price

        assert price == ModelPrice(model="openai/tiergate-no-such-model")
        assert not price.known


class TestIdentity:
    async def test_info_and_health_never_show_the_key(self, key: str) -> None:
        """info, repr and health name the variable, never its value."""
        remote: Backend = backend()
        health = await remote.health()

        assert health.ok
        assert KEY_ENV in health.detail
        for text in (repr(remote), repr(remote.info), health.detail):
            assert key not in text
        assert isinstance(remote, Backend)
        assert remote.info.model_id == GPT
        assert remote.info.extra["api_key_env"] == KEY_ENV


class TestUpstreamHelper:
    async def test_upstream_answers_both_ways(self) -> None:
        """The contract-test upstream answers streamed, whole and blocking calls, honouring
        max_tokens."""
        async with upstream() as remote:
            whole = await remote.acomplete(chat(max_tokens=3))
            async with aclosing(remote.astream(chat(max_tokens=50))) as stream:
                chunks = [chunk async for chunk in stream]
            blocking = remote.complete("hi", max_new_tokens=2)
            await remote.prewarm()
            assert (await remote.health()).ok
            await remote.aclose()

        assert whole.usage.completion_tokens == 3
        assert whole.finish_reason == "length"
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == len(chunks) - 1
        assert blocking.completion_tokens == 2

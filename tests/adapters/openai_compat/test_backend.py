"""The openai_compat adapter: against a real llama_cpp.server, and at the HTTP layer (respx) for
what a real local server cannot be made to do (rate limits, auth, crashes, odd replies)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx

from adapters.base import Backend, ChatRequest, Message, collect
from adapters.config import OpenAICompatConfig
from adapters.errors import (
    BackendBadResponse,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from adapters.openai_compat.backend import OpenAICompatBackend
from adapters.openai_compat.wire import build_payload, estimate_usage
from tests.adapters.openai_compat._upstream import MODEL_ALIAS, backend_for

TEMPLATE_MARKERS = ("<|im_start|>", "<|im_end|>")


def greedy(prompt: str, max_tokens: int = 40, **fields: Any) -> ChatRequest:
    return ChatRequest.from_prompt(prompt, max_tokens=max_tokens, temperature=0.0, seed=7, **fields)


# === against a real llama_cpp.server ========================================================

real = pytest.mark.model


@pytest.fixture
async def live(openai_compat_server: str) -> AsyncIterator[OpenAICompatBackend]:
    backend = backend_for(openai_compat_server)
    yield backend
    await backend.aclose()


@real
async def test_real_server_answers_with_text_and_usage(live: OpenAICompatBackend) -> None:
    """A real chat answer: text, the server's own token counts, wall latency, no ttft."""
    result = await live.acomplete(greedy("Name three primary colors.", max_tokens=60))
    assert result.text.strip()
    assert not any(marker in result.text for marker in TEMPLATE_MARKERS)
    assert result.finish_reason in ("stop", "length")
    assert result.usage.estimated is False
    assert result.usage.prompt_tokens > 5
    assert 0 < result.usage.completion_tokens <= 60
    assert result.timings.latency_ms > 0
    assert result.timings.ttft_ms is None  # not streamed: all text arrives at once
    assert result.timings.server_ms is None  # llama-cpp-python sends no `timings`
    assert result.backend == "openai_compat"
    assert isinstance(live, Backend)


@real
async def test_real_stream_joins_to_non_streamed_text(live: OpenAICompatBackend) -> None:
    """At temperature 0 with a fixed seed the streamed pieces join to the non-streamed text;
    llama-cpp-python ignores stream_options, so the final chunk's usage is estimated."""
    request = greedy("Explain what a rainbow is in two sentences.", max_tokens=50)
    whole = await live.acomplete(request)
    chunks = [chunk async for chunk in live.astream(request)]
    text_chunks = [c for c in chunks if c.delta]
    assert len(text_chunks) > 3
    assert "".join(c.delta for c in chunks) == whole.text
    final = chunks[-1]
    assert final.delta == ""
    assert final.finish_reason == whole.finish_reason
    assert final.usage is not None
    assert final.usage.estimated is True
    assert final.usage.completion_tokens == len(text_chunks)
    assert final.usage.prompt_tokens == estimate_usage(request, completion_tokens=0).prompt_tokens
    assert final.timings is not None
    assert final.timings.ttft_ms is not None
    assert 0 < final.timings.ttft_ms <= final.timings.latency_ms


@real
async def test_real_max_tokens_cuts_with_length(live: OpenAICompatBackend) -> None:
    """Hitting max_tokens reports finish_reason 'length' and exactly that many tokens."""
    result = await live.acomplete(greedy("Write a long story about a dragon.", max_tokens=6))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 6


@real
async def test_real_stop_sequence_ends_the_answer(live: OpenAICompatBackend) -> None:
    """A stop sequence the answer would contain ends it there, streamed or not."""
    prompt = "List three fruits, one per line, numbered."
    unstopped = await live.acomplete(greedy(prompt))
    assert "\n" in unstopped.text.strip()  # otherwise this test proves nothing
    stopped = await live.acomplete(greedy(prompt, stop=["\n"]))
    assert stopped.finish_reason == "stop"
    assert "\n" not in stopped.text
    assert unstopped.text.startswith(stopped.text)
    streamed = await collect("s", "m", live.astream(greedy(prompt, stop=["\n"])))
    assert streamed.text == stopped.text


@real
async def test_real_top_k_reaches_the_server(live: OpenAICompatBackend) -> None:
    """top_k travels in the body: with top_k=1 sampling at temperature 1 is greedy decoding."""
    prompt = "Describe the sea in one sentence."
    greedy_text = (await live.acomplete(greedy(prompt, max_tokens=24))).text
    for seed in (1, 2):
        request = ChatRequest.from_prompt(
            prompt, max_tokens=24, temperature=1.0, top_k=1, seed=seed
        )
        assert (await live.acomplete(request)).text == greedy_text


@real
def test_real_sync_complete_returns_only_generated_text(openai_compat_server: str) -> None:
    """The teaching contract (``acomplete`` on a loop of its own): generated text only, counted
    tokens."""
    backend = backend_for(openai_compat_server, name="teaching")
    prompt = "Name three primary colors."
    result = backend.complete(prompt, max_new_tokens=30, temperature=0.0)
    assert result.completion.strip()
    assert prompt not in result.completion
    assert not any(marker in result.completion for marker in TEMPLATE_MARKERS)
    assert result.prompt == prompt
    assert result.backend == "teaching"
    assert result.prompt_tokens > len(prompt.split())
    assert 0 < result.completion_tokens <= 30
    assert result.latency_ms > 0
    assert result.metadata["usage_estimated"] is False


@real
async def test_real_health_and_prewarm(live: OpenAICompatBackend) -> None:
    """A running server is healthy, lists the configured model, and prewarm succeeds."""
    await live.prewarm()
    health = await live.health()
    assert health.ok
    assert MODEL_ALIAS in health.detail
    assert "does not list" not in health.detail
    assert health.latency_ms is not None


@real
async def test_real_server_ignores_a_wrong_model_name(openai_compat_server: str) -> None:
    """llama_cpp.server answers any model name with the model it loaded (and echoes the name);
    health stays ok but says the name is not listed and how to check."""
    backend = backend_for(openai_compat_server, model="no-such-model")
    try:
        result = await backend.acomplete(greedy("Say hello.", max_tokens=8))
        assert result.text.strip()
        assert result.model == "no-such-model"
        health = await backend.health()
        assert health.ok
        assert "does not list 'no-such-model'" in health.detail
        assert f"{openai_compat_server}/models" in health.detail
    finally:
        await backend.aclose()


@real
async def test_real_closing_a_stream_early_leaves_the_server_usable(
    live: OpenAICompatBackend,
) -> None:
    """A stream closed after its first piece releases the upstream; the next request works."""
    async with aclosing(live.astream(greedy("Count from one to fifty.", max_tokens=200))) as it:
        first = await anext(it)
        assert first.delta
    result = await live.acomplete(greedy("Say hello.", max_tokens=8))
    assert result.text.strip()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_refused_port_is_unavailable_everywhere(refused_url: str) -> None:
    """Nothing listening: every call says the server is not reachable and how to fix it;
    health reports it instead of raising."""
    backend = backend_for(refused_url)
    try:
        with pytest.raises(BackendUnavailable, match="not reachable") as info:
            await backend.acomplete(greedy("hi"))
        assert refused_url in info.value.message
        assert "base_url" in info.value.message
        with pytest.raises(BackendUnavailable, match="not reachable"):
            await collect("b", "m", backend.astream(greedy("hi")))
        with pytest.raises(BackendUnavailable, match="not reachable"):
            await backend.prewarm()
        with pytest.raises(BackendUnavailable, match="not reachable"):
            backend.complete("hi")
        health = await backend.health()
        assert not health.ok
        assert "not reachable" in health.detail
    finally:
        await backend.aclose()


UNRESOLVABLE = "models.nowhere.example"


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> str:
    """A base URL whose host name does not resolve: the system resolver says so, at once."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == UNRESOLVABLE:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return f"http://{UNRESOLVABLE}:8080/v1"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_an_unresolvable_host_is_a_connection_failure_not_a_timeout(
    no_dns: str, transport: str
) -> None:
    """A host name that does not resolve is reported like a refused connection (not reachable,
    fix base_url), never as a server too slow to answer within timeout_s."""
    config = OpenAICompatConfig(
        type="openai_compat",
        model="m",
        base_url=no_dns,
        http_client=transport,  # type: ignore[arg-type]
    )
    backend = OpenAICompatBackend("remote", config)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.acomplete(greedy("hi"))
        message = info.value.message
        assert "not reachable" in message
        assert "does not resolve" in message
        assert "timeout_s" not in message
        with pytest.raises(BackendUnavailable, match="does not resolve"):
            await collect("b", "m", backend.astream(greedy("hi")))
    finally:
        await backend.aclose()


async def test_closed_backend_refuses_requests(refused_url: str) -> None:
    """After aclose a request is refused with an adapter error, not an httpx one."""
    backend = backend_for(refused_url)
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.acomplete(greedy("hi"))


# === at the HTTP layer (respx) ==============================================================

BASE_URL = "http://llm.test/v1"
MODEL = "qwen2.5-7b-instruct"

# The chat completion object: https://platform.openai.com/docs/api-reference/chat/object
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-123456",
    "object": "chat.completion",
    "created": 1728933352,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi there! How can I assist you today?",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "system_fingerprint": "fp_6b68a8204b",
}

# llama.cpp's server adds `timings` (and `cache_n`):
# https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md
# ("Timings and context usage" under POST /v1/chat/completions)
LLAMA_CPP_TIMINGS: dict[str, Any] = {
    "cache_n": 236,
    "prompt_n": 1,
    "prompt_ms": 30.958,
    "prompt_per_token_ms": 30.958,
    "prompt_per_second": 32.301828283480845,
    "predicted_n": 35,
    "predicted_ms": 661.064,
    "predicted_per_token_ms": 18.887542857142858,
    "predicted_per_second": 52.94494935437416,
}

# The models list: https://platform.openai.com/docs/api-reference/models/list
MODELS: dict[str, Any] = {
    "object": "list",
    "data": [
        {
            "id": "model-id-0",
            "object": "model",
            "created": 1686935002,
            "owned_by": "organization-owner",
        },
        {"id": MODEL, "object": "model", "created": 1686935002, "owned_by": "organization-owner"},
    ],
}


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """The error object: https://platform.openai.com/docs/guides/error-codes"""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """A chat completion chunk object:
    https://platform.openai.com/docs/api-reference/chat-streaming/streaming"""
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": MODEL,
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


HELLO_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hello"}),
    chunk({"content": "!"}),
    chunk({"content": " How"}),
    chunk({}, "stop"),
]

# With stream_options.include_usage the last chunk has empty choices and the usage
# (https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options).
USAGE_CHUNK: dict[str, Any] = {
    **chunk({}),
    "choices": [],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 16},
    },
}


def sse(*events: dict[str, Any], done: bool = True) -> httpx.Response:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    if done:
        body += "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


def make_backend(**config: Any) -> OpenAICompatBackend:
    # respx intercepts httpx's transport, so the HTTP-layer tests use it.
    fields: dict[str, Any] = {
        "type": "openai_compat",
        "model": MODEL,
        "base_url": BASE_URL,
        "http_client": "httpx",
    }
    return OpenAICompatBackend("local", OpenAICompatConfig.model_validate({**fields, **config}))


@pytest.fixture
async def backend() -> AsyncIterator[OpenAICompatBackend]:
    backend = make_backend()
    yield backend
    await backend.aclose()


def sent(route: respx.Route, call: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[call].request.content)
    return body


def test_build_payload_forwards_only_what_was_set() -> None:
    """Unset fields stay out of the payload; top_k goes at the top level, where the servers
    that support it read it."""
    bare = build_payload("m", ChatRequest.from_prompt("hi"))
    assert bare == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    full = ChatRequest(
        messages=(Message("system", "be brief"), Message("user", "hi", name="ann")),
        max_tokens=5,
        temperature=0.2,
        top_p=0.9,
        top_k=3,
        stop=("\n", "END"),
        seed=11,
        presence_penalty=0.5,
        frequency_penalty=-1.0,
    )
    assert build_payload("m", full) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "name": "ann"},
        ],
        "max_tokens": 5,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n", "END"],
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": -1.0,
        "top_k": 3,
    }


async def test_request_body_on_the_wire(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """The server receives the configured model, the parameters, and top_k at the top level;
    streams ask for usage; no real key is configured, so a placeholder bearer is sent."""
    route = api.post("/chat/completions").mock(
        side_effect=[httpx.Response(200, json=COMPLETION), sse(*HELLO_CHUNKS, USAGE_CHUNK)]
    )
    request = ChatRequest.from_prompt("hi", max_tokens=9, temperature=0.5, top_k=4, seed=3)
    await backend.acomplete(request)
    await collect("b", "m", backend.astream(request))
    plain, streamed = sent(route, 0), sent(route, 1)
    assert plain == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "temperature": 0.5,
        "seed": 3,
        "top_k": 4,
    }
    assert streamed == {**plain, "stream": True, "stream_options": {"include_usage": True}}
    assert route.calls[0].request.headers["authorization"] == "Bearer not-needed"


async def test_completion_maps_the_documented_object(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """The documented chat completion object maps onto Completion field by field."""
    api.post("/chat/completions").mock(return_value=httpx.Response(200, json=COMPLETION))
    result = await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert result.text == "Hi there! How can I assist you today?"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (19, 10)
    assert result.usage.estimated is False
    assert result.model == MODEL
    assert result.timings.server_ms is None


async def test_llama_cpp_timings_give_server_ms_and_cached_tokens(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """llama.cpp's `timings` object gives server_ms (prompt_ms + predicted_ms), and its
    cache_n the cached tokens when usage has no prompt_tokens_details."""
    usage = {"prompt_tokens": 237, "completion_tokens": 35, "total_tokens": 272}
    body = {**COMPLETION, "usage": usage, "timings": LLAMA_CPP_TIMINGS}
    api.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
    result = await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert result.timings.server_ms == pytest.approx(30.958 + 661.064)
    assert result.timings.load_ms is None
    assert result.usage.cached_tokens == 236


async def test_vllms_stop_reason_names_the_matched_stop_string(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """vLLM's ``stop_reason`` (the stop string that ended the choice) becomes
    ``stop_sequence``, whole and streamed; a token id there, or a string the request did not
    ask for, says nothing."""
    request = ChatRequest.from_prompt("count", stop=[",", ";"])
    choice = {**COMPLETION["choices"][0], "stop_reason": ","}
    api.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json={**COMPLETION, "choices": [choice]}),
            httpx.Response(200, json={**COMPLETION, "choices": [{**choice, "stop_reason": 2}]}),
            httpx.Response(200, json={**COMPLETION, "choices": [{**choice, "stop_reason": "."}]}),
        ]
    )
    assert (await backend.acomplete(request)).stop_sequence == ","
    assert (await backend.acomplete(request)).stop_sequence is None
    assert (await backend.acomplete(request)).stop_sequence is None
    final = chunk({}, "stop")
    final["choices"][0]["stop_reason"] = ";"
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS[:-1], final))
    chunks = [c async for c in backend.astream(request)]
    assert (chunks[-1].finish_reason, chunks[-1].stop_sequence) == ("stop", ";")
    # Servers without the field (llama.cpp's, OpenAI) leave it unknown.
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS))
    chunks = [c async for c in backend.astream(request)]
    assert (chunks[-1].finish_reason, chunks[-1].stop_sequence) == ("stop", None)


async def test_stream_with_timings_in_the_last_chunk(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """llama.cpp's server puts `timings` in its final chunk: it reaches the stream's Timings."""
    final = chunk({}, "length", timings=LLAMA_CPP_TIMINGS)
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS[:-1], final))
    chunks = [c async for c in backend.astream(ChatRequest.from_prompt("hi"))]
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].timings is not None
    assert chunks[-1].timings.server_ms == pytest.approx(692.022)


async def test_stream_uses_the_servers_usage_chunk(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """With include_usage honoured, the empty-choices usage chunk supplies exact usage,
    cached tokens included."""
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS, USAGE_CHUNK))
    chunks = [c async for c in backend.astream(ChatRequest.from_prompt("hi"))]
    assert [c.delta for c in chunks if c.delta] == ["Hello", "!", " How"]
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.estimated is False
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (19, 3)
    assert final.usage.cached_tokens == 16


async def test_stream_without_usage_is_estimated(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A server that ignores stream_options: completion tokens are the content chunks counted,
    prompt tokens 4 + ceil(chars / 4) per message, and the usage says it is estimated."""
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS))
    request = ChatRequest(messages=(Message("system", "x" * 10), Message("user", "y" * 40)))
    chunks = [c async for c in backend.astream(request)]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.estimated is True
    assert usage.completion_tokens == 3
    assert usage.prompt_tokens == (4 + 3) + (4 + 10)


async def test_stream_options_refused_then_not_sent_again(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A server that rejects stream_options gets the stream again without it, and later
    streams do not ask again."""
    refusal = httpx.Response(
        400,
        json=error_body(
            "Unrecognized request argument supplied: stream_options", "invalid_request_error", None
        ),
    )
    route = api.post("/chat/completions").mock(
        side_effect=[refusal, sse(*HELLO_CHUNKS), sse(*HELLO_CHUNKS)]
    )
    first = await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))
    second = await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))
    assert first.text == second.text == "Hello! How"
    assert first.usage.estimated
    assert ["stream_options" in sent(route, i) for i in range(3)] == [True, False, False]


async def test_other_bad_requests_are_not_retried(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A 400 that is not about stream_options is the caller's problem: rejected, not retried."""
    refusal = httpx.Response(
        400,
        json=error_body(
            "This model's maximum context length is 2048 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
    )
    route = api.post("/chat/completions").mock(return_value=refusal)
    with pytest.raises(BackendRejected, match="maximum context length") as info:
        await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))
    assert info.value.status_code == 400
    assert info.value.retryable is False
    assert route.call_count == 1


async def test_rate_limit_carries_retry_after(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """HTTP 429 becomes BackendRateLimited with the retry-after header's seconds."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            429,
            headers={"retry-after": "7"},
            json=error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        )
    )
    with pytest.raises(BackendRateLimited, match="Rate limit reached") as info:
        await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert info.value.retry_after == 7.0
    assert "retry after 7 s" in info.value.message


async def test_rate_limit_prefers_retry_after_ms(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """OpenAI's retry-after-ms header, when sent, is the more precise delay."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            429,
            headers={"retry-after": "1", "retry-after-ms": "250"},
            json=error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        )
    )
    with pytest.raises(BackendRateLimited) as info:
        await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))
    assert info.value.retry_after == 0.25


async def test_unauthorised_names_the_env_var_and_never_the_key(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP 401 says which environment variable to fix; the key is sent but never shown,
    even when the server's message echoes it."""
    secret = "sk-local-0123456789abcdef"
    monkeypatch.setenv("LOCAL_LLM_KEY", secret)
    backend = make_backend(api_key_env="LOCAL_LLM_KEY")
    message = f"Incorrect API key provided: {secret}. You can find your API key in settings."
    route = api.post("/chat/completions").mock(
        return_value=httpx.Response(
            401, json=error_body(message, "invalid_request_error", "invalid_api_key")
        )
    )
    try:
        with pytest.raises(BackendRejected, match="LOCAL_LLM_KEY") as info:
            await backend.acomplete(ChatRequest.from_prompt("hi"))
        assert route.calls[0].request.headers["authorization"] == f"Bearer {secret}"
        assert info.value.status_code == 401
        assert secret not in str(info.value)
        assert secret not in repr(backend)
        assert secret not in repr(backend.info)
    finally:
        await backend.aclose()


async def test_unauthorised_with_the_env_var_unset(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured key variable that is not set is named as the thing to set."""
    monkeypatch.delenv("LOCAL_LLM_KEY", raising=False)
    backend = make_backend(api_key_env="LOCAL_LLM_KEY")
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            403, json=error_body("Forbidden", "invalid_request_error", None)
        )
    )
    try:
        with pytest.raises(BackendRejected, match="LOCAL_LLM_KEY is not set") as info:
            await backend.acomplete(ChatRequest.from_prompt("hi"))
        assert info.value.status_code == 403
    finally:
        await backend.aclose()


async def test_unknown_model_says_how_to_list_models(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """HTTP 404 (a server that checks model names) is unavailable, naming the model and the
    models endpoint to check."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            404,
            json=error_body(
                f"The model `{MODEL}` does not exist.", "invalid_request_error", "model_not_found"
            ),
        )
    )
    with pytest.raises(BackendUnavailable, match="may be wrong") as info:
        await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert repr(MODEL) in info.value.message
    assert f"GET {BASE_URL}/models" in info.value.message


async def test_server_error_is_unavailable(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """HTTP 500 is a retryable 'unavailable' carrying the status and the server's message."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            500,
            json=error_body(
                "The server had an error while processing your request.", "server_error", None
            ),
        )
    )
    with pytest.raises(BackendUnavailable, match="HTTP 500") as info:
        await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert "server had an error" in info.value.message
    assert info.value.retryable
    assert info.value.status_code == 500  # a 5xx: the router retries it on this backend


async def test_timeout_is_backend_timeout(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A read timeout becomes BackendTimeout naming timeout_s (the SDK does not retry)."""
    route = api.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(BackendTimeout, match="timeout_s=60"):
        await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("response", "says"),
    [
        (httpx.Response(200, text="<html>bad gateway</html>"), "not JSON"),
        (httpx.Response(200, json={"object": "chat.completion"}), "no `choices`"),
        (httpx.Response(200, json={**COMPLETION, "choices": []}), "empty `choices`"),
        (httpx.Response(200, json={**COMPLETION, "choices": [{"index": 0}]}), "message is missing"),
    ],
)
async def test_unreadable_replies_are_bad_responses(
    api: respx.MockRouter, backend: OpenAICompatBackend, response: httpx.Response, says: str
) -> None:
    """A 200 that is not a chat completion object is BackendBadResponse, saying what is wrong."""
    api.post("/chat/completions").mock(return_value=response)
    with pytest.raises(BackendBadResponse, match=says) as info:
        await backend.acomplete(ChatRequest.from_prompt("hi"))
    assert "base_url" in info.value.message


async def test_malformed_stream_data_is_a_bad_response(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A stream event that is not JSON is BackendBadResponse, after the good pieces."""
    body = f"data: {json.dumps(HELLO_CHUNKS[1])}\n\ndata: {{not json\n\n"
    api.post("/chat/completions").mock(
        return_value=httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    )
    received: list[str] = []

    async def read_all() -> None:
        async for piece in backend.astream(ChatRequest.from_prompt("hi")):
            received.append(piece.delta)

    with pytest.raises(BackendBadResponse, match="unreadable data"):
        await read_all()
    assert received == ["Hello"]


async def test_stream_ending_without_finish_reason_is_a_bad_response(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A stream cut off before any finish_reason is not passed off as a complete answer."""
    api.post("/chat/completions").mock(return_value=sse(*HELLO_CHUNKS[:3], done=False))
    with pytest.raises(BackendBadResponse, match="without a finish_reason"):
        await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))


async def test_error_event_mid_stream_is_unavailable(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """An error object sent in the middle of a stream (as vLLM does) is BackendUnavailable."""
    api.post("/chat/completions").mock(
        return_value=sse(
            HELLO_CHUNKS[1], error_body("CUDA out of memory", "server_error", None), done=False
        )
    )
    with pytest.raises(BackendUnavailable, match="CUDA out of memory"):
        await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))


class _BreaksMidway(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield f"data: {json.dumps(HELLO_CHUNKS[1])}\n\n".encode()
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_connection_dropping_mid_stream_is_unavailable(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A server that dies mid-answer surfaces as BackendUnavailable, never an httpx error."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, stream=_BreaksMidway(), headers={"content-type": "text/event-stream"}
        )
    )
    with pytest.raises(BackendUnavailable, match="broke mid-answer"):
        await collect("b", "m", backend.astream(ChatRequest.from_prompt("hi")))


class _EndlessStream(httpx.AsyncByteStream):
    """An answer that never ends on its own; records whether the client closed it."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield f"data: {json.dumps(HELLO_CHUNKS[1])}\n\n".encode()

    async def aclose(self) -> None:
        self.closed = True


async def test_closing_the_stream_closes_the_http_response(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A caller that stops reading and closes the stream closes the upstream response, so the
    server sees the client go (and stops generating)."""
    body = _EndlessStream()
    api.post("/chat/completions").mock(
        return_value=httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})
    )
    async with aclosing(backend.astream(ChatRequest.from_prompt("hi"))) as stream:
        first = await anext(stream)
        assert first.delta == "Hello"
        assert not body.closed
    assert body.closed


def test_sync_complete_over_http(api: respx.MockRouter) -> None:
    """The teaching complete() goes over HTTP through acomplete and shares the mapping."""
    route = api.post("/chat/completions").mock(return_value=httpx.Response(200, json=COMPLETION))
    backend = make_backend()
    result = backend.complete("hi", max_new_tokens=12, temperature=0.3, top_k=5)
    assert result.completion == "Hi there! How can I assist you today?"
    assert (result.prompt_tokens, result.completion_tokens) == (19, 10)
    assert sent(route)["max_tokens"] == 12
    assert sent(route)["top_k"] == 5


def test_sync_complete_maps_errors(api: respx.MockRouter) -> None:
    """The blocking path raises the same adapter errors as the async one."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(
            429,
            headers={"retry-after": "3"},
            json=error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        )
    )
    with pytest.raises(BackendRateLimited) as info:
        make_backend().complete("hi")
    assert info.value.retry_after == 3.0


async def test_health_lists_models(api: respx.MockRouter, backend: OpenAICompatBackend) -> None:
    """Health reads GET /models: ok and serving when the model is listed."""
    api.get("/models").mock(return_value=httpx.Response(200, json=MODELS))
    health = await backend.health()
    assert health.ok
    assert f"serves {MODEL!r}" in health.detail


async def test_health_reports_failure_instead_of_raising(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A failing server gives Health(ok=False) with what to do; prewarm raises instead."""
    api.get("/models").mock(
        return_value=httpx.Response(
            503, json=error_body("Loading model", "unavailable_error", None)
        )
    )
    health = await backend.health()
    assert not health.ok
    assert "HTTP 503" in health.detail
    assert "Loading model" in health.detail
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        await backend.prewarm()


async def test_identity(backend: OpenAICompatBackend) -> None:
    """Name, model id and info come from the config; the context window is unknown."""
    assert backend.name == "local"
    assert backend.model_id == MODEL
    assert backend.info.extra == {"type": "openai_compat", "base_url": BASE_URL}
    assert backend.context_window is None

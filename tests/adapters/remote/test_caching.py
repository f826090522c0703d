"""Prompt caching through the remote adapter, against respx-mocked provider APIs (no network).

Two halves: the cached prompt tokens each provider reports (whole answers and a stream's final
usage) become ``Usage.cached_tokens``; and ``prompt_cache_min_tokens`` marks long system prompts
for Anthropic prompt caching on Claude models, and changes nothing for anyone else. Canned
bodies follow the providers' API references (URLs next to each).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest
import respx

from adapters.base import ChatRequest, Chunk, Message
from adapters.config import RemoteConfig
from adapters.remote.backend import RemoteBackend
from adapters.remote.loader import load_litellm
from adapters.remote.wire import build_payload, estimate_tokens, takes_cache_control

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
BEDROCK_CONVERSE = re.compile(
    r"^https://bedrock-runtime\.us-east-1\.amazonaws\.com/model/[^/]+/converse$"
)
KEY_ENV = "TIERGATE_TEST_REMOTE_CACHE_KEY"
SECRET = "sk-test-prompt-cache-0123456789abcdef"
CLAUDE = "anthropic/claude-haiku-4-5-20251001"
GPT = "openai/gpt-4o-mini"
BEDROCK_CLAUDE = "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MIN_TOKENS = 1024
SHORT_SYSTEM = "Be brief."
# About 1,900 estimated tokens: above MIN_TOKENS, as a shared instruction block would be.
LONG_SYSTEM = "You are the support assistant of Example Corp. Follow the handbook below.\n" + (
    "Always answer politely, cite the handbook section, and never invent a policy. " * 95
)
EPHEMERAL = {"type": "ephemeral"}


def usage_block(*, read: int = 0, written: int = 0, fresh: int = 10, out: int = 41) -> Any:
    """Anthropic's ``usage`` with the prompt-caching fields of
    https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching ("Tracking cache
    performance"): ``cache_creation_input_tokens`` and ``cache_read_input_tokens``."""
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": out,
    }


def anthropic_message(**usage: int) -> dict[str, Any]:
    """A whole answer of https://docs.anthropic.com/en/api/messages (response body)."""
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "Section 4.2 covers refunds."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage_block(**usage),
    }


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


# The event sequence of https://docs.anthropic.com/en/docs/build-with-claude/streaming (basic
# streaming request): the input usage, cache fields included, arrives in message_start; the
# final output count in message_delta.
ANTHROPIC_STREAM = (
    sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-haiku-4-5-20251001",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_block(read=1500, fresh=25, out=1),
            },
        },
    )
    + sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    + sse("ping", {"type": "ping"})
    + sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    )
    + sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    )
    + sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    + sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    )
    + sse("message_stop", {"type": "message_stop"})
)

# https://platform.openai.com/docs/api-reference/chat/object, with ``cached_tokens`` as
# https://platform.openai.com/docs/guides/prompt-caching describes it.
OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Section 4.2.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1950,
        "completion_tokens": 5,
        "total_tokens": 1955,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    },
    "system_fingerprint": "fp_06737a9306",
}


def openai_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    """One event of https://platform.openai.com/docs/api-reference/chat-streaming/streaming;
    ``delta=None`` is the final usage-only chunk (empty ``choices``) that
    ``stream_options.include_usage`` asks for."""
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
    + openai_chunk({"content": "Section"})
    + openai_chunk({"content": " 4.2."})
    + openai_chunk({}, "stop")
    + openai_chunk(
        None,
        usage={
            "prompt_tokens": 1950,
            "completion_tokens": 2,
            "total_tokens": 1952,
            "prompt_tokens_details": {"cached_tokens": 1792, "audio_tokens": 0},
        },
    )
    + "data: [DONE]\n\n"
)

# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html (response
# syntax; TokenUsage with cacheReadInputTokens / cacheWriteInputTokens).
BEDROCK_CONVERSE_ANSWER: dict[str, Any] = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Section 4.2."}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 12,
        "outputTokens": 4,
        "totalTokens": 2016,
        "cacheReadInputTokens": 2000,
        "cacheWriteInputTokens": 0,
    },
    "metrics": {"latencyMs": 412},
}


@pytest.fixture(autouse=True)
def _httpx_transport() -> Iterator[None]:
    # litellm's default aiohttp transport bypasses httpx, and so respx.
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


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static, fake AWS credentials, so botocore signs locally and asks no metadata service."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION_NAME", "us-east-1")


def backend(model: str, *, key_env: str | None = KEY_ENV, **config: Any) -> RemoteBackend:
    return RemoteBackend(
        "hosted", RemoteConfig(type="remote", model=model, api_key_env=key_env, **config)
    )


def chat(*systems: str, max_tokens: int = 64) -> ChatRequest:
    turns = [Message(role="system", content=text) for text in systems]
    turns.append(Message(role="user", content="How do refunds work?"))
    return ChatRequest(messages=tuple(turns), max_tokens=max_tokens)


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


async def drain(remote: RemoteBackend, request: ChatRequest) -> list[Chunk]:
    async with aclosing(remote.astream(request)) as stream:
        return [chunk async for chunk in stream]


def test_long_system_is_above_the_threshold() -> None:
    """The fixtures mean what their names say under the adapter's own estimate."""
    assert estimate_tokens(LONG_SYSTEM) >= MIN_TOKENS > estimate_tokens(SHORT_SYSTEM)


class TestAnthropicMarking:
    async def test_long_system_prompt_is_marked_short_one_is_not(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """With the threshold set, the long system prompt reaches Anthropic as a text block
        with ``cache_control: ephemeral``; the short one and the user turn carry none."""
        route = router.post(ANTHROPIC_URL).respond(200, json=anthropic_message(written=1900))

        await backend(CLAUDE, prompt_cache_min_tokens=MIN_TOKENS).acomplete(
            chat(SHORT_SYSTEM, LONG_SYSTEM)
        )

        body = sent(route)
        assert body["system"] == [
            {"type": "text", "text": SHORT_SYSTEM},
            {"type": "text", "text": LONG_SYSTEM, "cache_control": EPHEMERAL},
        ]
        assert "cache_control" not in json.dumps(body["messages"])

    async def test_short_system_prompt_alone_is_not_marked(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A system prompt below the threshold is sent without any cache marker."""
        route = router.post(ANTHROPIC_URL).respond(200, json=anthropic_message())

        await backend(CLAUDE, prompt_cache_min_tokens=MIN_TOKENS).acomplete(chat(SHORT_SYSTEM))

        body = sent(route)
        assert body["system"] == [{"type": "text", "text": SHORT_SYSTEM}]
        assert "cache_control" not in route.calls.last.request.content.decode()

    async def test_off_by_default(self, router: respx.MockRouter, key: str) -> None:
        """Without ``prompt_cache_min_tokens`` even a long system prompt goes unmarked."""
        route = router.post(ANTHROPIC_URL).respond(200, json=anthropic_message())

        await backend(CLAUDE).acomplete(chat(LONG_SYSTEM))

        assert sent(route)["system"] == [{"type": "text", "text": LONG_SYSTEM}]
        assert "cache_control" not in route.calls.last.request.content.decode()

    async def test_stream_is_marked_and_reports_cache_reads(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """A streamed request is marked the same way, and the ``cache_read_input_tokens`` of
        ``message_start`` reach the final chunk's usage as cached tokens."""
        route = router.post(ANTHROPIC_URL).respond(
            200, text=ANTHROPIC_STREAM, headers={"content-type": "text/event-stream"}
        )

        chunks = await drain(backend(CLAUDE, prompt_cache_min_tokens=MIN_TOKENS), chat(LONG_SYSTEM))

        body = sent(route)
        assert body["stream"] is True
        assert body["system"] == [{"type": "text", "text": LONG_SYSTEM, "cache_control": EPHEMERAL}]
        assert "".join(c.delta for c in chunks) == "Hi!"
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.cached_tokens == 1500
        # litellm's convention: prompt tokens include the cached ones (25 fresh + 1500 read).
        assert (usage.prompt_tokens, usage.completion_tokens) == (1525, 15)
        assert not usage.estimated


class TestAnthropicUsage:
    async def test_whole_answer_reports_cache_reads(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """``cache_read_input_tokens`` of a whole answer become ``Usage.cached_tokens``."""
        router.post(ANTHROPIC_URL).respond(200, json=anthropic_message(read=1900))

        result = await backend(CLAUDE, prompt_cache_min_tokens=MIN_TOKENS).acomplete(
            chat(LONG_SYSTEM)
        )

        assert result.usage.cached_tokens == 1900
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1910, 41)

    async def test_cache_writes_are_not_cache_reads(
        self, router: respx.MockRouter, key: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A first request that writes the cache reports no cached tokens, counts the written
        ones as prompt tokens (as litellm does), and logs how many were written."""
        caplog.set_level(logging.DEBUG, logger="adapters.remote")
        router.post(ANTHROPIC_URL).respond(200, json=anthropic_message(written=1900))

        result = await backend(CLAUDE, prompt_cache_min_tokens=MIN_TOKENS).acomplete(
            chat(LONG_SYSTEM)
        )

        assert result.usage.cached_tokens == 0
        assert result.usage.prompt_tokens == 1910
        written = [r.getMessage() for r in caplog.records if r.name == "adapters.remote"]
        assert written == [f"remote_cache_written backend=hosted model={CLAUDE} tokens=1900"]

    def test_blocking_complete_reports_cache_writes_in_metadata(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """The teaching ``complete()`` (over ``acomplete``) reports cache reads as
        ``cached_tokens`` and cache writes as ``cache_write_tokens`` in its metadata."""
        router.post(ANTHROPIC_URL).respond(200, json=anthropic_message(read=1200, written=700))

        result = backend(CLAUDE).complete("How do refunds work?", max_new_tokens=32)

        assert result.metadata["cached_tokens"] == 1200
        assert result.metadata["cache_write_tokens"] == 700
        assert result.prompt_tokens == 10 + 1200 + 700


class TestBedrock:
    async def test_claude_on_bedrock_gets_a_cache_point(
        self, router: respx.MockRouter, aws: None
    ) -> None:
        """For Claude on Bedrock, litellm turns the marker into a Converse ``cachePoint`` after
        the long system text, and ``cacheReadInputTokens`` become cached tokens."""
        route = router.post(url__regex=BEDROCK_CONVERSE.pattern).respond(
            200, json=BEDROCK_CONVERSE_ANSWER
        )

        result = await backend(
            BEDROCK_CLAUDE, key_env=None, prompt_cache_min_tokens=MIN_TOKENS
        ).acomplete(chat(SHORT_SYSTEM, LONG_SYSTEM))

        assert sent(route)["system"] == [
            {"text": SHORT_SYSTEM},
            {"text": LONG_SYSTEM},
            {"cachePoint": {"type": "default"}},
        ]
        assert result.text == "Section 4.2."
        assert result.usage.cached_tokens == 2000


class TestOpenAI:
    async def test_requests_are_unchanged_by_the_setting(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """OpenAI caches by itself: with the threshold set the request body is byte for byte
        what it is without, system prompts as plain strings; cached tokens are still read."""
        route = router.post(OPENAI_URL).respond(200, json=OPENAI_COMPLETION)
        request = chat(SHORT_SYSTEM, LONG_SYSTEM)

        await backend(GPT).acomplete(request)
        plain = route.calls.last.request.content
        result = await backend(GPT, prompt_cache_min_tokens=MIN_TOKENS).acomplete(request)

        assert route.calls.last.request.content == plain
        assert json.loads(plain)["messages"][1] == {"role": "system", "content": LONG_SYSTEM}
        assert result.usage.cached_tokens == 1920

    async def test_stream_final_usage_chunk_reports_cached_tokens(
        self, router: respx.MockRouter, key: str
    ) -> None:
        """The ``prompt_tokens_details.cached_tokens`` of a stream's final usage-only chunk
        reach the last ``Chunk``; the streamed request is unmarked too."""
        route = router.post(OPENAI_URL).respond(
            200, text=OPENAI_STREAM, headers={"content-type": "text/event-stream"}
        )

        chunks = await drain(backend(GPT, prompt_cache_min_tokens=MIN_TOKENS), chat(LONG_SYSTEM))

        body = sent(route)
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"][0] == {"role": "system", "content": LONG_SYSTEM}
        assert "".join(c.delta for c in chunks) == "Section 4.2."
        usage = chunks[-1].usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
            1950,
            2,
            1792,
        )


class TestMarkingRules:
    @pytest.mark.parametrize(
        ("provider", "model", "expected"),
        [
            ("anthropic", "claude-haiku-4-5-20251001", True),
            ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
            ("vertex_ai", "claude-3-5-sonnet@20240620", True),
            # litellm would turn the marker into a paid context-cache upload for Gemini.
            ("vertex_ai", "gemini-2.0-flash", False),
            ("bedrock", "amazon.nova-pro-v1:0", False),
            ("openai", "gpt-4o-mini", False),
            ("gemini", "gemini-2.0-flash", False),
        ],
    )
    def test_only_claude_models_take_cache_control(
        self, provider: str, model: str, expected: bool
    ) -> None:
        """Markers go to Claude through Anthropic, Bedrock or Vertex AI, and nowhere else."""
        assert takes_cache_control(provider, model) is expected

    def test_threshold_is_inclusive(self) -> None:
        """A system prompt of exactly the threshold (estimated) is marked; one token less
        is not."""
        text = "x" * (4 * 300)

        marked = build_payload(
            CLAUDE, chat(text), stream=False, top_k_supported=True, cache_system_min_tokens=300
        )
        unmarked = build_payload(
            CLAUDE, chat(text), stream=False, top_k_supported=True, cache_system_min_tokens=301
        )

        assert marked["messages"][0]["content"] == [
            {"type": "text", "text": text, "cache_control": EPHEMERAL}
        ]
        assert unmarked["messages"][0]["content"] == text

    def test_at_most_four_breakpoints_the_last_ones(self) -> None:
        """Anthropic takes at most four cache breakpoints: of five long system prompts the
        last four (the longest prefixes) are marked."""
        systems = [f"{index} " + "y" * 2000 for index in range(5)]

        payload = build_payload(
            CLAUDE,
            chat(*systems),
            stream=False,
            top_k_supported=True,
            cache_system_min_tokens=100,
        )

        kinds = [isinstance(m["content"], list) for m in payload["messages"]]
        assert kinds == [False, True, True, True, True, False]

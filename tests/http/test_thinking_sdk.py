"""Extended thinking through the gateway with the official ``anthropic`` SDK, against the app
behind a real uvicorn: a remote Anthropic model (litellm, mocked at the HTTP layer with respx;
bodies from Anthropic's extended-thinking documentation,
https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking, signatures shortened)
answers with ``thinking`` and ``redacted_thinking`` blocks, whole, streamed and from the
response cache; a tool-use conversation carries the turn's thinking block back upstream; the
same conversation routed to the tiny tier goes without the blocks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anthropic
import openai
import pytest
import respx
from anthropic.types import MessageParam, ThinkingConfigEnabledParam, ToolParam
from fastapi import FastAPI
from openai.types.chat import ChatCompletionMessageParam

from adapters.remote.loader import load_litellm
from tests.http.helpers import gateway, served

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
KEY_ENV = "TIERGATE_TEST_ANTHROPIC_KEY"
KEY = "sk-ant-test-hx-think-0123456789"
POLICY = f"""
version: 1
backends:
  claude: {{type: remote, model: anthropic/claude-sonnet-4-5-20250929, api_key_env: {KEY_ENV}}}
  tiny: {{type: tiny, model: default, n_ctx: 2048, capabilities: {{tools: true}}}}
tiers:
  - {{name: local, max_score: 0.0, backends: [tiny]}}
  - {{name: remote, backends: [claude]}}
routes:
  auto: {{}}
  thinker: {{tier: remote}}
  local: {{tier: local}}
cache: {{responses: {{deterministic_only: false}}}}
"""
THINK: ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": 2048}
SIGNATURE = "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"
REDACTED = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB9U"
)
# The documented answer with a thinking and a redacted_thinking block before the text.
THOUGHT: dict[str, Any] = {
    "id": "msg_01DZyBp4Wp7Vh5N2gQ3H8qbx",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me analyze this step by step...",
            "signature": SIGNATURE,
        },
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "text", "text": "Based on my analysis..."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 40, "output_tokens": 420},
}
# The documented stream ("What is 27 * 453?"), usage as the Messages stream carries it.
STREAM_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
STREAM_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_01TDPxbNyhYfpd5sJ8SJKr4K",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 45, "output_tokens": 1},
        },
    },
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": ""},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {
            "type": "thinking_delta",
            "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453",
        },
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "\n2. 453 = 400 + 50 + 3"},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": STREAM_SIGNATURE},
    },
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 94},
    },
    {"type": "message_stop"},
]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Get current weather for a location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
TOOL_SIGNATURE = (
    "BDaL4VrbR2Oj0hO4XpJxT28J5TILnCrrUXoKiiNBZW9P+nr8XSj1zuZzAl4egiCCpQNvfyUuFFJP5CncdYZE"
)
# The documented tool-use turn with thinking, and the answer after the tool result.
TOOL_CALL: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "thinking",
            "thinking": "The user wants to know the current weather in Paris. I have access to a "
            "function `get_weather`...",
            "signature": TOOL_SIGNATURE,
        },
        {
            "type": "text",
            "text": "I can help you get the current weather information for Paris. Let me check "
            "that for you",
        },
        {
            "type": "tool_use",
            "id": "toolu_01CswdEQBMshySk6Y9DFKrfq",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 390, "output_tokens": 120},
}
TOOL_ANSWER: dict[str, Any] = {
    "id": "msg_01B8w9d8a9qw8e",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Currently in Paris, the temperature is 88°F (31°C)"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 520, "output_tokens": 18},
}
QUESTION: list[MessageParam] = [{"role": "user", "content": "What is 27 * 453?"}]


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


@pytest.fixture(autouse=True)
def httpx_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm's aiohttp transport bypasses httpx, where respx intercepts."""
    monkeypatch.setattr(load_litellm(), "disable_aiohttp_transport", True)
    monkeypatch.setenv(KEY_ENV, KEY)


@asynccontextmanager
async def claude(
    tmp_path: Path, *replies: respx.MockResponse | Any
) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, respx.Route, FastAPI]]:
    """The SDK against the app behind uvicorn; Anthropic's API answers ``replies`` in turn."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        upstream = router.post(ANTHROPIC_URL).mock(side_effect=list(replies))
        async with gateway(policy, ledger=False) as (_client, app), served(app) as url:
            client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
            async with client:
                yield client, upstream, app


def sent(upstream: respx.Route, call: int) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(upstream.calls[call].request.content)
    return body


async def test_an_answer_carries_its_thinking_blocks_and_the_cache_replays_them(
    tmp_path: Path,
) -> None:
    """The answer's thinking (with its signature) and redacted thinking come first, as
    Anthropic sent them; the same request again, whole or streamed, comes from the response
    cache with the same blocks."""
    reply = respx.MockResponse(200, json=THOUGHT)
    async with claude(tmp_path, reply) as (sdk, upstream, app):
        first = await sdk.messages.with_raw_response.create(
            model="thinker", max_tokens=4096, thinking=THINK, messages=QUESTION
        )
        message = await first.parse()
        await app.state.cache.flush()  # the answer is kept in the background
        again = await sdk.messages.with_raw_response.create(
            model="thinker", max_tokens=4096, thinking=THINK, messages=QUESTION
        )
        replayed = await again.parse()
        async with sdk.messages.stream(  # a stream asked for: the cached answer as events
            model="thinker", max_tokens=4096, thinking=THINK, messages=QUESTION
        ) as stream:
            streamed = await stream.get_final_message()
    assert upstream.call_count == 1
    assert sent(upstream, 0)["thinking"] == THINK
    assert [block.model_dump(exclude_none=True) for block in message.content] == THOUGHT["content"]
    assert (first.headers["x-tiergate-cache"], again.headers["x-tiergate-cache"]) == ("miss", "hit")
    assert replayed.content == message.content
    assert [block.model_dump(exclude_none=True) for block in streamed.content] == THOUGHT["content"]


async def test_a_stream_carries_thinking_deltas_and_the_signature(tmp_path: Path) -> None:
    """Streamed, the thinking block opens first, its text comes as ``thinking_delta`` events
    and its signature as a ``signature_delta``; the SDK's final message has the whole block,
    and so has the same request asked again whole (from the response cache)."""
    reply = respx.MockResponse(
        200, content=sse(STREAM_EVENTS), headers={"content-type": "text/event-stream"}
    )
    async with claude(tmp_path, reply) as (sdk, upstream, app):
        async with sdk.messages.stream(
            model="thinker", max_tokens=4096, thinking=THINK, messages=QUESTION
        ) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_message()
        await app.state.cache.flush()  # the answer is kept in the background
        cached = await sdk.messages.create(
            model="thinker", max_tokens=4096, thinking=THINK, messages=QUESTION
        )
    assert upstream.call_count == 1
    assert [b.model_dump(exclude_none=True) for b in cached.content] == [
        b.model_dump(exclude_none=True, exclude={"parsed_output"}) for b in final.content
    ]
    assert sent(upstream, 0)["stream"] is True
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas == ["thinking_delta", "thinking_delta", "signature_delta", "text_delta"]
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == (
        "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3"
    )
    assert thinking.signature == STREAM_SIGNATURE
    assert text.type == "text"
    assert text.text == "27 * 453 = 12,231"


async def _first_turn(
    sdk: anthropic.AsyncAnthropic,
) -> tuple[list[MessageParam], anthropic.types.Message]:
    """Ask the weather with thinking on and tools; the conversation to go on with, as
    Anthropic's docs build it: the answer's content as it came, then the tool's result."""
    question: list[MessageParam] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = await sdk.messages.create(
        model="thinker", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=question
    )
    call = next(block for block in first.content if block.type == "tool_use")
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "88°F"}],
    }
    return [*question, {"role": "assistant", "content": first.content}, result], first


async def test_tool_use_with_thinking_sends_the_thinking_block_back(tmp_path: Path) -> None:
    """The second request of a tool-use conversation reaches Anthropic with the first
    answer's thinking block, signature intact, before its text and ``tool_use``, and with
    thinking still on."""
    replies = (respx.MockResponse(200, json=TOOL_CALL), respx.MockResponse(200, json=TOOL_ANSWER))
    async with claude(tmp_path, *replies) as (sdk, upstream, _app):
        turns, first = await _first_turn(sdk)
        second = await sdk.messages.create(
            model="thinker", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=turns
        )
    assert [block.type for block in first.content] == ["thinking", "text", "tool_use"]
    body = sent(upstream, 1)
    assert body["thinking"] == THINK
    assistant = body["messages"][1]
    assert assistant["role"] == "assistant"
    assert [block["type"] for block in assistant["content"]] == ["thinking", "text", "tool_use"]
    assert assistant["content"][0] == TOOL_CALL["content"][0]
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert second.content[0].type == "text"
    assert second.content[0].text == TOOL_ANSWER["content"][0]["text"]


async def test_the_same_conversation_on_the_tiny_tier_goes_without_thinking_blocks(
    tmp_path: Path,
) -> None:
    """The tool-use conversation, its assistant turn sent back as Anthropic gave it (thinking
    block first), routed to the in-process model, which cannot verify a signature: the block
    is dropped, not refused, and the tiny model answers; nothing goes to Anthropic."""
    turns: list[Any] = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": TOOL_CALL["content"]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": TOOL_CALL["content"][2]["id"],
                    "content": "88°F",
                }
            ],
        },
    ]
    async with claude(tmp_path) as (sdk, upstream, _app):
        raw = await sdk.messages.with_raw_response.create(
            model="local",
            max_tokens=8,
            thinking={"type": "adaptive"},  # a budget must be below max_tokens
            tools=[WEATHER],
            messages=turns,
        )
        answer = await raw.parse()
    assert raw.headers["x-tiergate-tier"] == "local"
    assert upstream.call_count == 0
    assert [block.type for block in answer.content] == ["text"]
    assert answer.content[0].type == "text"
    assert answer.content[0].text.strip()


async def test_the_openai_edge_shows_the_thinking_as_reasoning_content(tmp_path: Path) -> None:
    """Through ``/v1/chat/completions`` the thinking text comes as the message's
    ``reasoning_content`` (``delta.reasoning_content`` streamed), as litellm and
    DeepSeek-style clients read it, without signatures; the openai SDK's habit of sending
    the message back as it came is accepted."""
    replies = (
        respx.MockResponse(200, json=THOUGHT),
        respx.MockResponse(
            200, content=sse(STREAM_EVENTS), headers={"content-type": "text/event-stream"}
        ),
        respx.MockResponse(200, json=TOOL_ANSWER),
    )
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 27 * 453?"}]
    async with claude(tmp_path, *replies) as (sdk, upstream, _app):
        url = str(sdk.base_url).rstrip("/")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused") as chat:
            whole = await chat.chat.completions.create(
                model="thinker", messages=question, reasoning_effort="low"
            )
            stream = await chat.chat.completions.create(
                model="thinker",
                messages=[{"role": "user", "content": "What is 27 * 453? Show your work."}],
                reasoning_effort="low",
                stream=True,
            )
            pieces = [
                (chunk.choices[0].delta.model_extra or {}).get("reasoning_content")
                async for chunk in stream
                if chunk.choices
            ]
            message = whole.choices[0].message
            # The SDK takes the answer's message object back as it came (extras included).
            echoed = cast("ChatCompletionMessageParam", message)
            again = await chat.chat.completions.create(
                model="thinker",
                messages=[*question, echoed, {"role": "user", "content": "Thanks. And?"}],
                reasoning_effort="low",
            )
    assert (message.model_extra or {}).get("reasoning_content") == (
        "Let me analyze this step by step..."
    )
    assert message.content == "Based on my analysis..."
    assert SIGNATURE not in whole.model_dump_json()
    assert "".join(p for p in pieces if p) == (
        "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3"
    )
    assert again.choices[0].message.content == TOOL_ANSWER["content"][0]["text"]
    assert upstream.call_count == 3
    assert "reasoning_content" not in json.dumps(sent(upstream, 2))


async def test_the_responses_edge_leaves_the_thinking_out(tmp_path: Path) -> None:
    """``/v1/responses`` has no place for Anthropic's thinking: the answer's text comes
    whole and streamed, and no event carries the thinking or its signature."""
    replies = (
        respx.MockResponse(200, json=THOUGHT),
        respx.MockResponse(
            200, content=sse(STREAM_EVENTS), headers={"content-type": "text/event-stream"}
        ),
    )
    async with claude(tmp_path, *replies) as (sdk, upstream, _app):
        url = str(sdk.base_url).rstrip("/")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused") as client:
            whole = await client.responses.create(model="thinker", input="What is 27 * 453?")
            stream = await client.responses.create(
                model="thinker", input="What is 27 * 453? Show your work.", stream=True
            )
            events = [event async for event in stream]
    assert upstream.call_count == 2
    assert whole.output_text == "Based on my analysis..."
    assert SIGNATURE not in whole.model_dump_json()
    done = next(e for e in events if e.type == "response.completed")
    assert done.response.output_text == "27 * 453 = 12,231"
    dumped = "".join(event.model_dump_json() for event in events)
    assert STREAM_SIGNATURE not in dumped
    assert "step by step" not in dumped

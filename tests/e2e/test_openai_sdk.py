"""End to end: the official openai SDK, unchanged, against a real ``tiergate serve``."""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e._tool_upstream import StubServer
from tests.e2e.conftest import API_KEY, Server

EASY = "Say hello to my friend Anna."
HARD = (
    "Implement a Python function that solves the equation x^2 + 3x - 10 = 0, then explain step "
    "by step why the algorithm is correct and compare its complexity with Newton's method.\n"
    "1. code\n2. proof\n3. analysis"
)
STRONG_REPLY = "A thorough answer from the strong tier."


def sync_client(server: Server, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def async_client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


def test_sync_chat_routes_an_easy_prompt_to_the_tiny_tier(server: Server) -> None:
    """A plain request is answered by the in-process model, with usage and routing headers."""
    with sync_client(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": EASY}],
            max_tokens=24,
            temperature=0,
        )
    completion = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "tiny"
    assert raw.headers["x-tiergate-backend"] == "tiny"
    assert float(raw.headers["x-tiergate-complexity"]) <= 0.25
    assert len(raw.headers["x-tiergate-policy"]) == 12
    assert uuid.UUID(raw.headers["x-request-id"]).version == 7
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert EASY not in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 10
    assert 0 < completion.usage.completion_tokens <= 24
    total = completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.total_tokens == total
    assert completion.model.startswith("SmolLM2")
    assert completion.id.startswith("chatcmpl-")


def test_sync_stream_matches_the_whole_answer(server: Server) -> None:
    """Streaming at temperature 0 gives the same text as the non-streamed call, then usage."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Name a colour of the sky."}
    ]
    with sync_client(server) as client:
        whole = client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=20,
            temperature=0,
        )
        pieces: list[str] = []
        usage = None
        finish = None
        with client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                    assert chunk.choices == []
                    continue
                delta = chunk.choices[0].delta
                pieces.append(delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None
    assert whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_hard_prompt_goes_to_the_strong_tier(server: Server) -> None:
    """Code, maths and multi-step reasoning score above the tiny tier's ceiling."""
    with sync_client(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": HARD}], max_tokens=200
        )
    assert raw.headers["x-tiergate-tier"] == "strong"
    assert raw.headers["x-tiergate-backend"] == "helper"
    assert float(raw.headers["x-tiergate-complexity"]) > 0.25
    assert raw.parse().choices[0].message.content == STRONG_REPLY


async def test_async_chat_and_stream(server: Server) -> None:
    """The async client works the same, streaming and not."""
    async with async_client(server) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": HARD}], max_tokens=200
        )
        assert raw.headers["x-tiergate-backend"] == "helper"
        assert raw.parse().choices[0].message.content == STRONG_REPLY
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": EASY}],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text.strip()


async def test_async_stream_headers_carry_the_decision(server: Server) -> None:
    """Streamed responses carry the routing headers too (they are sent before the first byte)."""
    async with async_client(server) as client:
        response = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": HARD}],
            max_tokens=50,
            stream=True,
        )
        assert response.headers["x-tiergate-tier"] == "strong"
        assert response.headers["content-type"].startswith("text/event-stream")
        text = ""
        async for chunk in response.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text == STRONG_REPLY


def test_legacy_completions(server: Server) -> None:
    """/v1/completions answers a prompt through the same routing."""
    with sync_client(server) as client:
        completion = client.completions.create(
            model="tiny", prompt="Write one word: yes or no?", max_tokens=8, temperature=0
        )
        assert completion.object == "text_completion"
        assert completion.choices[0].text
        assert completion.usage is not None
        assert completion.usage.completion_tokens > 0
        pieces = [
            c.choices[0].text
            for c in client.completions.create(
                model="tiny",
                prompt="Write one word: yes or no?",
                max_tokens=8,
                temperature=0,
                stream=True,
            )
            if c.choices
        ]
        assert "".join(pieces) == completion.choices[0].text


def test_models_lists_routes_and_backends(server: Server) -> None:
    """client.models.list() shows the routes and the backends a request may name."""
    with sync_client(server) as client:
        ids = [m.id for m in client.models.list()]
    assert ids == ["auto", "tiny", "helper"]


def test_sdk_errors_are_typed(server: Server) -> None:
    """A wrong model is a BadRequestError naming the valid ones; a wrong key an
    AuthenticationError; neither leaks the key."""
    with sync_client(server) as client, pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "auto, tiny, helper" in str(bad.value)
    with (
        sync_client(server, key="wrong-key-123456") as client,
        pytest.raises(openai.AuthenticationError) as denied,
    ):
        client.models.list()
    assert "wrong-key-123456" not in str(denied.value)
    assert API_KEY not in server.log.read_text()


def test_hints_that_change_no_answer_are_accepted(server: Server) -> None:
    """What the openai SDK offers for OpenAI's own prompt cache, abuse detection and capacity
    (``prompt_cache_key``, ``prompt_cache_retention``, ``safety_identifier``,
    ``service_tier``) and ``modalities=["text"]`` are accepted on chat and Responses (before,
    each was a 400 "unrecognized request argument"); audio output is still refused by name."""
    hints: dict[str, Any] = {
        "prompt_cache_key": "team-a-summaries",
        "prompt_cache_retention": "24h",
        "safety_identifier": "user-7f3a",
        "service_tier": "auto",
    }
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": HARD}]
    with sync_client(server) as client:
        chat = client.chat.completions.create(
            model="helper", messages=question, modalities=["text"], **hints
        )
        response = client.responses.create(model="helper", input=HARD, **hints)
        with pytest.raises(openai.BadRequestError) as audio:
            client.chat.completions.create(
                model="helper", messages=question, modalities=["text", "audio"]
            )
    assert chat.choices[0].message.content == STRONG_REPLY
    assert response.output_text == STRONG_REPLY
    assert audio.value.param == "modalities[1]"


def test_a_cap_above_the_limit_is_named_as_sent(server: Server) -> None:
    """``max_completion_tokens`` (what the SDK documents in place of ``max_tokens``) above the
    policy's limit is refused naming ``max_completion_tokens`` (before: ``max_tokens``, a field
    the client never sent)."""
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": EASY}]
    with sync_client(server) as client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="helper", messages=question, max_completion_tokens=1_000_000
        )
    assert refused.value.param == "max_completion_tokens"
    assert str(refused.value.message).count("max_completion_tokens: 1000000 is above") == 1


CALLED: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
]


@pytest.mark.parametrize(
    ("turns", "param", "fault"),
    [
        (
            [*CALLED, {"role": "tool", "tool_call_id": "call_nowhere", "content": "18 C"}],
            "messages[2].tool_call_id",
            "'call_nowhere' answers no tool call",
        ),
        ([{"role": "user", "content": []}], "messages[0].content", "an empty array"),
        (
            [
                {"role": "user", "content": "Hi."},
                {"role": "assistant"},
                {"role": "user", "content": "Hello?"},
            ],
            "messages[1].content",
            "needs `content` or `tool_calls`",
        ),
    ],
    ids=["unknown-tool-call-id", "empty-user-content", "empty-assistant-turn"],
)
def test_turns_openai_refuses_are_refused_by_name(
    gateway: Server,
    stub: StubServer,
    turns: list[ChatCompletionMessageParam],
    param: str,
    fault: str,
) -> None:
    """A tool message answering no earlier tool call, a user turn of ``content: []`` and an
    assistant turn with neither content nor tool calls are 400s naming the field, as at
    OpenAI (before, all three went to the upstream)."""
    asked = len(stub.requests)
    with sync_client(gateway) as client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="agent", messages=turns)
    assert refused.value.param == param
    assert fault in refused.value.message
    assert len(stub.requests) == asked


def test_a_tool_result_answering_an_earlier_call_is_forwarded(
    gateway: Server, stub: StubServer
) -> None:
    """The same tool message with the call's own id goes through (the check refuses only
    strangers)."""
    answered: list[ChatCompletionMessageParam] = [
        *CALLED,
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ]
    with sync_client(gateway) as client:
        reply = client.chat.completions.create(model="agent", messages=answered)
    assert reply.choices[0].message.content == "The weather in Paris: 18 C"
    assert stub.last()["messages"][2]["tool_call_id"] == "call_1"

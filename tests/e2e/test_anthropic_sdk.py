"""End to end with the official ``anthropic`` SDK, unchanged, against a real ``tiergate serve``:
messages on the real tiny model (whole and streamed), tool use to an OpenAI-compatible upstream
(a real HTTP stub; the gateway translates Anthropic's blocks to chat and back), count_tokens,
and errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pydantic
import pytest
from anthropic.types import MessageParam, ToolParam

from tests.e2e._tool_upstream import JSON_REPLY, StubServer
from tests.e2e.conftest import API_KEY, Server
from tests.e2e.test_capabilities import TOOL_RESULT

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
QUESTION: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(server: Server, key: str = API_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0)


@pytest.fixture
def sdk(gateway: Server) -> Iterator[anthropic.Anthropic]:
    with client(gateway) as opened:
        yield opened


def test_a_message_from_the_tiny_model(gateway: Server) -> None:
    with client(gateway) as sdk:
        raw = sdk.messages.with_raw_response.create(
            model="auto", max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]
        )
    message = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "tiny"  # an easy prompt: the cheapest tier
    assert raw.headers["x-request-id"]
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 12


def test_a_streamed_message_from_the_tiny_model(gateway: Server) -> None:
    with (
        client(gateway) as sdk,
        sdk.messages.stream(
            model="auto", max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip()
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_tool_use_round_trip(sdk: anthropic.Anthropic, stub: StubServer) -> None:
    """The call comes back as a ``tool_use`` block; the ``tool_result`` reaches the upstream
    as a tool message answering that call, and the final answer uses it."""
    first = sdk.messages.create(model="agent", max_tokens=64, messages=QUESTION, tools=[WEATHER])
    sent = stub.last()
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"city": "Paris"})]

    assistant: MessageParam = {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in calls
        ],
    }
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": TOOL_RESULT}],
    }
    follow_up = [*QUESTION, assistant, result]
    second = sdk.messages.create(model="agent", max_tokens=64, messages=follow_up, tools=[WEATHER])
    sent = stub.last()
    assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].id
    assert sent["messages"][2] == {
        "role": "tool",
        "content": TOOL_RESULT,
        "tool_call_id": calls[0].id,
    }
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == f"The weather in Paris: {TOOL_RESULT}"


def test_streamed_tool_use_joins_into_the_call(gateway: Server) -> None:
    with (
        client(gateway) as sdk,
        sdk.messages.stream(
            model="agent", max_tokens=64, messages=QUESTION, tools=[WEATHER]
        ) as stream,
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    calls = [block for block in final.content if block.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"city": "Paris"})]


ANSWER_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


class Answer(pydantic.BaseModel):
    answer: str
    confidence: float


def test_structured_output_and_effort_reach_the_backend(
    sdk: anthropic.Anthropic, stub: StubServer
) -> None:
    """``output_config`` as the current SDK sends it (before, refused as an unknown argument):
    its ``format`` reaches the upstream as a strict JSON schema and the answer is that JSON; its
    ``effort`` as ``reasoning_effort``."""
    message = sdk.messages.create(
        model="auto",
        max_tokens=64,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        output_config={"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}, "effort": "low"},
    )
    sent = stub.last()
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": ANSWER_SCHEMA, "strict": True},
    }
    assert sent["reasoning_effort"] == "low"
    assert message.content[0].type == "text"
    assert json.loads(message.content[0].text) == JSON_REPLY
    # The SDK's own helper sends a pydantic model's schema the same way, and reads it back.
    parsed = sdk.messages.parse(
        model="auto", max_tokens=64, messages=QUESTION, output_format=Answer
    ).parsed_output
    assert parsed == Answer(answer="yes", confidence=0.9)
    # No backend of the tiny route can follow a schema: refused naming the field as sent.
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(
            model="tiny",
            max_tokens=64,
            messages=QUESTION,
            output_config={"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}},
        )
    assert str(refused.value.body).count("output_config.format") >= 1
    assert "response_format" not in str(refused.value.body)


def test_prompt_caching_and_strict_tools_as_the_sdk_sends_them(
    sdk: anthropic.Anthropic, stub: StubServer
) -> None:
    """The top-level ``cache_control`` (automatic prompt caching) is accepted, as it is on
    blocks and tools, by messages and count_tokens alike; a tool's ``strict`` reaches the
    upstream (before, both were refused as unknown arguments)."""
    strict: ToolParam = {**WEATHER, "strict": True}
    message = sdk.messages.create(
        model="agent",
        max_tokens=64,
        messages=QUESTION,
        tools=[strict],
        cache_control={"type": "ephemeral"},
    )
    assert message.stop_reason == "tool_use"
    assert stub.last()["tools"][0]["function"]["strict"] is True
    counted = sdk.messages.count_tokens(
        model="auto", messages=QUESTION, tools=[strict], cache_control={"type": "ephemeral"}
    )
    assert counted.input_tokens > 0


def test_tool_choice_any_without_tools_is_refused(
    sdk: anthropic.Anthropic, stub: StubServer
) -> None:
    """``{"type": "any"}`` asks for a tool call; with no tools to call it is a 400 naming
    ``tool_choice`` (before, the upstream was asked and its text answer came back)."""
    asked = len(stub.requests)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(
            model="agent", max_tokens=64, messages=QUESTION, tool_choice={"type": "any"}
        )
    assert _error(refused.value.body) == "invalid_request_error"
    assert "tool_choice" in str(refused.value.body)
    assert len(stub.requests) == asked


@pytest.mark.parametrize("empty", ["", []], ids=["string", "blocks"])
def test_an_empty_turn_is_refused_as_at_anthropic(
    sdk: anthropic.Anthropic, stub: StubServer, empty: str | list[Any]
) -> None:
    """Every turn needs content but a final assistant one (a prefill): an empty one is a 400
    naming it, as Anthropic refuses it (before, the model was asked to answer nothing)."""
    asked = len(stub.requests)
    turns: list[MessageParam] = [
        {"role": "user", "content": empty},
        {"role": "assistant", "content": "Hello."},
        *QUESTION,
    ]
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="agent", max_tokens=16, messages=turns)
    assert _error(refused.value.body) == "invalid_request_error"
    assert "messages[0].content: must not be empty" in str(refused.value.body)
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.count_tokens(model="agent", messages=turns)
    assert len(stub.requests) == asked
    prefill: list[MessageParam] = [*QUESTION, {"role": "assistant", "content": empty}]
    answered = sdk.messages.create(model="agent", max_tokens=16, messages=prefill)
    assert answered.content[0].type == "text"


def test_count_tokens(gateway: Server) -> None:
    with client(gateway) as sdk:
        short = sdk.messages.count_tokens(model="auto", messages=QUESTION)
        longer = sdk.messages.count_tokens(
            model="auto", messages=QUESTION, system="Answer in French.", tools=[WEATHER]
        )
    assert 0 < short.input_tokens < longer.input_tokens


def test_errors_come_in_anthropics_shape(gateway: Server) -> None:
    with (
        client(gateway, key="not-a-key") as stranger,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        stranger.messages.create(model="auto", max_tokens=8, messages=QUESTION)
    assert _error(denied.value.body) == "authentication_error"
    with client(gateway) as sdk, pytest.raises(anthropic.BadRequestError) as unknown:
        sdk.messages.create(model="gpt-17-ultra", max_tokens=8, messages=QUESTION)
    assert _error(unknown.value.body) == "invalid_request_error"
    assert "gpt-17-ultra" in str(unknown.value.body)
    # max_tokens is required, as at Anthropic (the SDK's types ask for it: sent raw here).
    raw = httpx.post(
        f"{gateway.base_url}/v1/messages",
        headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"},
        json={"model": "auto", "messages": QUESTION},
    )
    assert raw.status_code == 400
    body = raw.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def _error(body: object) -> Any:
    assert isinstance(body, dict)
    assert body["type"] == "error"
    return body["error"]["type"]


def test_a_tool_result_answering_no_tool_use_is_refused(
    sdk: anthropic.Anthropic, stub: StubServer
) -> None:
    """A ``tool_result`` whose ``tool_use_id`` matches no ``tool_use`` block of an earlier
    assistant turn is a 400 naming the block's field, as at Anthropic (before, it went to the
    upstream as a tool result answering nothing); the call's own id goes through."""
    called: list[MessageParam] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            ],
        },
    ]
    asked = len(stub.requests)
    orphan: list[MessageParam] = [
        *called,
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "18"}],
        },
    ]
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="agent", max_tokens=16, messages=orphan, tools=[WEATHER])
    assert _error(refused.value.body) == "invalid_request_error"
    assert "messages[2].content[0].tool_use_id: 'toolu_nowhere'" in str(refused.value.body)
    assert len(stub.requests) == asked
    answered: list[MessageParam] = [
        *called,
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18"}],
        },
    ]
    reply = sdk.messages.create(model="agent", max_tokens=16, messages=answered, tools=[WEATHER])
    assert reply.content[0].type == "text"
    assert stub.last()["messages"][2]["tool_call_id"] == "toolu_1"


@pytest.mark.parametrize("blank", ["", " \n"], ids=["empty", "whitespace"])
def test_a_blank_stop_sequence_is_refused_by_position(
    sdk: anthropic.Anthropic, stub: StubServer, blank: str
) -> None:
    """A stop sequence with nothing but whitespace is a 400 naming ``stop_sequences[i]``, as
    Anthropic refuses it (before, it was accepted: an empty one ends an answer before it
    starts, or is dropped by a backend without a word)."""
    asked = len(stub.requests)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(
            model="agent", max_tokens=16, messages=QUESTION, stop_sequences=["END", blank]
        )
    assert _error(refused.value.body) == "invalid_request_error"
    assert "stop_sequences[1]: each stop sequence must contain non-whitespace" in str(
        refused.value.body
    )
    assert len(stub.requests) == asked

"""End to end with the official ``openai`` SDK's Responses client, unchanged, against a real
``tiergate serve``: plain and streamed on the real tiny model, function calling and structured
output through an OpenAI-compatible upstream (a real HTTP stub), and what is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseInputParam

from tests.e2e._tool_upstream import JSON_REPLY, StubServer
from tests.e2e.conftest import API_KEY, Server
from tests.e2e.test_capabilities import TOOL_RESULT

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


@pytest.fixture
def sdk(gateway: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_a_response_from_the_tiny_model(sdk: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="auto", input="Say hello.", max_output_tokens=12
    )
    response = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "tiny"
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.output_text.strip()
    assert response.status in ("completed", "incomplete")
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 12


def test_a_streamed_response_from_the_tiny_model(sdk: openai.OpenAI) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    final: Any = None
    with sdk.responses.create(
        model="auto", input="Say hello.", max_output_tokens=12, stream=True
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type in ("response.completed", "response.incomplete"):
                final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_item.done" in kinds
    assert "".join(deltas).strip()
    assert final.output_text == "".join(deltas)
    assert final.usage.output_tokens > 0


def test_function_calling_round_trip(sdk: openai.OpenAI, stub: StubServer) -> None:
    question: ResponseInputParam = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.responses.create(model="agent", input=question, tools=[WEATHER])
    sent = stub.last()
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    follow_up: ResponseInputParam = [
        *question,
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": calls[0].name,
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": TOOL_RESULT},
    ]
    second = sdk.responses.create(model="agent", input=follow_up, tools=[WEATHER])
    sent = stub.last()
    assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent["messages"][2] == {
        "role": "tool",
        "content": TOOL_RESULT,
        "tool_call_id": calls[0].call_id,
    }
    assert second.output_text == f"The weather in Paris: {TOOL_RESULT}"


def test_streamed_function_call_arguments_join(sdk: openai.OpenAI) -> None:
    arguments: list[str] = []
    done: list[str] = []
    with sdk.responses.create(
        model="agent", input="What is the weather in Paris?", tools=[WEATHER], stream=True
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments.append(event.delta)
            if event.type == "response.function_call_arguments.done":
                done.append(event.arguments)
    assert json.loads("".join(arguments)) == {"city": "Paris"}
    assert done == ["".join(arguments)]


def test_structured_output(sdk: openai.OpenAI, stub: StubServer) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    response = sdk.responses.create(
        model="agent",
        input="Is Paris in France? Answer as JSON.",
        text={"format": {"type": "json_schema", "name": "verdict", "schema": schema}},
    )
    assert json.loads(response.output_text) == JSON_REPLY
    sent = stub.last()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_stored_conversations_are_refused_by_name(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chained:
        sdk.responses.create(model="auto", input="and then?", previous_response_id="resp_1")
    assert "previous_response_id" in str(chained.value)
    with pytest.raises(openai.BadRequestError) as stored:
        sdk.responses.create(model="auto", input="hi", store=True)
    assert "store" in str(stored.value)


def test_a_tool_choice_no_tool_can_satisfy_is_refused(sdk: openai.OpenAI, stub: StubServer) -> None:
    """``tool_choice`` forcing a call with no tools, or naming a function not among them, is a
    400 naming the field, as at OpenAI (before, the upstream was asked anyway: a text answer, or
    a call of another function than the one named)."""
    asked = len(stub.requests)
    with pytest.raises(openai.BadRequestError) as required:
        sdk.responses.create(model="agent", input="Weather in Paris?", tool_choice="required")
    assert required.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as named:
        sdk.responses.create(
            model="agent",
            input="Weather in Paris?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_time"},
        )
    assert named.value.param == "tool_choice.name"
    assert "'get_time' is not one of the tools sent (get_weather)" in str(named.value)
    assert len(stub.requests) == asked


def test_logprobs_asked_through_include_are_refused_by_name(
    sdk: openai.OpenAI, stub: StubServer
) -> None:
    """``include=["message.output_text.logprobs"]`` is a 400 naming the item (before, the answer
    came without logprobs, as if none had been asked for); what adds outputs of tools and items
    the gateway never returns (``reasoning.encrypted_content``) is accepted."""
    asked = len(stub.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(
            model="agent",
            input="Say hello.",
            include=["reasoning.encrypted_content", "message.output_text.logprobs"],
        )
    assert refused.value.param == "include[1]"
    assert "/v1/chat/completions" in str(refused.value)
    assert len(stub.requests) == asked
    answered = sdk.responses.create(
        model="agent", input="Say hello.", include=["reasoning.encrypted_content"]
    )
    assert answered.output_text

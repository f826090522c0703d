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


def test_the_response_repeats_what_the_request_set(sdk: openai.OpenAI) -> None:
    """The ``response`` object, whole and in its ``created`` / ``in_progress`` / ``completed``
    events, echoes the request's values as OpenAI's does (before: always ``tools: []``,
    ``tool_choice: "auto"``, ``parallel_tool_calls: true`` and no ``metadata``,
    ``instructions``, sampling values or ``text`` format at all)."""
    schema: dict[str, object] = {"type": "object", "properties": {"answer": {"type": "string"}}}
    sent: dict[str, Any] = {
        "instructions": "Answer briefly.",
        "metadata": {"ticket": "T-1042", "team": "support"},
        "temperature": 0.3,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "truncation": "auto",
        "user": "user-7f3a",
    }
    response = sdk.responses.create(model="agent", input="Weather in Paris?", **sent)
    echoed = {name: getattr(response, name) for name in sent}
    echoed["tools"] = [tool.model_dump(exclude_none=True) for tool in response.tools]
    echoed["tool_choice"] = response.tool_choice.model_dump(exclude_none=True)
    assert echoed == sent
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "text"
    shells: list[Any] = []
    with sdk.responses.create(
        model="agent",
        input="Is Paris in France?",
        metadata={"ticket": "T-1043"},
        text={"format": {"type": "json_schema", "name": "verdict", "schema": schema}},
        stream=True,
    ) as stream:
        for event in stream:
            if event.type in ("response.created", "response.in_progress", "response.completed"):
                shells.append(event.response)
    assert [shell.metadata for shell in shells] == [{"ticket": "T-1043"}] * 3
    formats = [shell.text.format.model_dump(by_alias=True, exclude_none=True) for shell in shells]
    assert formats == [{"type": "json_schema", "name": "verdict", "schema": schema}] * 3
    assert all(shell.tools == [] and shell.tool_choice == "auto" for shell in shells)
    assert all(shell.parallel_tool_calls and shell.instructions is None for shell in shells)


@pytest.mark.parametrize(
    ("metadata", "fault"),
    [
        ({f"k{i}": "v" for i in range(17)}, "at most 16 key-value pairs"),
        ({"k" * 65: "v"}, "longer than 64 characters"),
        ({"k": "v" * 513}, "longer than 512 characters"),
    ],
    ids=["pairs", "key", "value"],
)
def test_metadata_past_openais_bounds_is_refused(
    sdk: openai.OpenAI, stub: StubServer, metadata: dict[str, str], fault: str
) -> None:
    """``metadata`` takes at most 16 pairs, keys up to 64 characters and values up to 512, as
    at OpenAI: past them, a 400 naming ``metadata`` on Responses and on chat (before, both
    accepted it)."""
    asked = len(stub.requests)
    with pytest.raises(openai.BadRequestError) as responses:
        sdk.responses.create(model="agent", input="hi", metadata=metadata)
    with pytest.raises(openai.BadRequestError) as chat:
        sdk.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": "hi"}], metadata=metadata
        )
    for refused in (responses.value, chat.value):
        assert refused.param == "metadata"
        assert fault in refused.message
    assert len(stub.requests) == asked
    bounded = {f"k{i}": "v" * 512 for i in range(15)} | {"k" * 64: "v"}
    answered = sdk.responses.create(model="agent", input="hi", metadata=bounded)
    assert answered.metadata == bounded


def test_a_function_output_answering_no_call_is_refused(
    sdk: openai.OpenAI, stub: StubServer
) -> None:
    """A ``function_call_output`` whose ``call_id`` matches no ``function_call`` item before it
    is a 400 naming ``input[i].call_id``, as at OpenAI (before, it went to the upstream as a
    tool result answering nothing)."""
    asked = len(stub.requests)
    orphan: ResponseInputParam = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call_output", "call_id": "call_nowhere", "output": TOOL_RESULT},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="agent", input=orphan, tools=[WEATHER])
    assert refused.value.param == "input[1].call_id"
    assert "'call_nowhere'" in refused.value.message
    assert len(stub.requests) == asked

"""End to end: tools, JSON mode, images and long prompts through a real ``tiergate serve`` with
the official openai SDK, to an OpenAI-compatible upstream (a real HTTP stub speaking the
documented format) behind the gateway's ``openai_compat`` adapter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.e2e._tool_upstream import (
    CALL_ID,
    JSON_REPLY,
    PLAIN_REPLY,
    TOOL_ARGUMENTS,
    StubServer,
    vector,
)
from tests.e2e.conftest import ADMIN_KEY, API_KEY, TOOL_POLICY, Server, tiergate_bin

WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]
TOOL_RESULT = "18 degrees and sunny"
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAH"
    "ggJ/PchI7wAAAABJRU5ErkJggg=="
)


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


def follow_up(call_id: str, arguments: str) -> list[ChatCompletionMessageParam]:
    return [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]


def test_tool_round_trip(gateway: Server, stub: StubServer) -> None:
    """An easy prompt with tools skips the tiny and text-only tiers, the call comes back in
    OpenAI's shape, and the tool result reaches the backend, which gives the final answer."""
    with client(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="auto", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="auto"
        )
        first = raw.parse()
        assert raw.headers["x-tiergate-backend"] == "agent"
        assert raw.headers["x-tiergate-tier"] == "strong"
        sent = stub.last()
        assert sent["tools"] == [WEATHER_TOOL]
        assert sent["tool_choice"] == "auto"
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        calls = choice.message.tool_calls
        assert calls is not None
        assert len(calls) == 1
        call = calls[0]
        assert call.type == "function"
        assert call.id == CALL_ID
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == json.loads(TOOL_ARGUMENTS)

        final = sdk.chat.completions.create(
            model="auto",
            messages=follow_up(call.id, call.function.arguments),
            tools=[WEATHER_TOOL],
        )
    sent = stub.last()
    assert sent["messages"][1]["tool_calls"][0]["id"] == CALL_ID
    assert sent["messages"][2] == {
        "role": "tool",
        "content": TOOL_RESULT,
        "tool_call_id": CALL_ID,
    }
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == f"The weather in Paris: {TOOL_RESULT}"


def test_streamed_tool_round_trip(gateway: Server, stub: StubServer) -> None:
    """Streamed, the tool call arrives as OpenAI-style deltas that join into the whole call."""
    with client(gateway) as sdk:
        ids: list[str] = []
        names: list[str] = []
        arguments = ""
        finish = None
        usage = None
        with sdk.chat.completions.create(
            model="auto",
            messages=QUESTION,
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                for piece in choice.delta.tool_calls or []:
                    assert piece.index == 0
                    if piece.id:
                        ids.append(piece.id)
                    if piece.function and piece.function.name:
                        names.append(piece.function.name)
                    if piece.function and piece.function.arguments:
                        arguments += piece.function.arguments
        assert stub.last()["stream"] is True
        assert ids == [CALL_ID]
        assert names == ["get_weather"]
        assert json.loads(arguments) == json.loads(TOOL_ARGUMENTS)
        assert finish == "tool_calls"
        assert usage is not None
        assert usage.total_tokens == 30

        text = ""
        with sdk.chat.completions.create(
            model="auto", messages=follow_up(ids[0], arguments), tools=[WEATHER_TOOL], stream=True
        ) as stream:
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
    assert text == f"The weather in Paris: {TOOL_RESULT}"


def test_tools_never_land_on_the_tiny_tier(gateway: Server) -> None:
    """Pinned to the tiny backend, or on a route fixed to the tiny tier, a request with tools
    still never reaches it: a 400 naming `tools` and the backends considered, or a tier up."""
    with client(gateway) as sdk:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model="tiny", messages=QUESTION, tools=[WEATHER_TOOL])
        raw = sdk.chat.completions.with_raw_response.create(
            model="cheap", messages=QUESTION, tools=[WEATHER_TOOL]
        )
    body: Any = refused.value.body
    assert body["param"] == "tools"
    assert body["code"] == "capability_unavailable"
    assert "tiny: lacks tools" in body["message"]
    assert raw.headers["x-tiergate-backend"] == "agent"


def test_json_mode_returns_valid_json(gateway: Server, stub: StubServer) -> None:
    """`response_format: json_object` goes to a backend that honours it and comes back as JSON."""
    with client(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
            response_format={"type": "json_object"},
        )
    assert raw.headers["x-tiergate-backend"] == "agent"
    assert stub.last()["response_format"] == {"type": "json_object"}
    content = raw.parse().choices[0].message.content
    assert content is not None
    assert json.loads(content) == JSON_REPLY


def test_image_request_avoids_text_only_backends(gateway: Server, stub: StubServer) -> None:
    """An image goes only to a vision backend, and arrives there as an image_url part."""
    with client(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": PIXEL}},
                    ],
                }
            ],
        )
    assert raw.headers["x-tiergate-backend"] == "agent"
    content = stub.last()["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]


def test_oversized_prompt_skips_small_context_backends(gateway: Server) -> None:
    """On a route fixed to the tiny tier, a prompt longer than the tiny (2048) and small (1024)
    windows moves up to the first tier whose window holds it."""
    long_prompt = "Please summarise. " + " ".join(f"word{i}" for i in range(2500))
    with client(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="cheap", messages=[{"role": "user", "content": long_prompt}], max_tokens=16
        )
    assert raw.headers["x-tiergate-tier"] == "strong"
    assert raw.headers["x-tiergate-backend"] == "agent"


def test_logprobs_pass_through_whole_and_streamed(gateway: Server, stub: StubServer) -> None:
    """`logprobs` reaches a backend that has them and their values come back, per piece when
    streamed."""
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi."}]
    with client(gateway) as sdk:
        whole = sdk.chat.completions.create(model="auto", messages=question, logprobs=True)
        assert stub.last()["logprobs"] is True
        tokens: list[str] = []
        text = ""
        with sdk.chat.completions.create(
            model="auto", messages=question, logprobs=True, stream=True
        ) as stream:
            for chunk in stream:
                if not chunk.choices:
                    continue
                text += chunk.choices[0].delta.content or ""
                if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
                    tokens += [t.token for t in chunk.choices[0].logprobs.content]
    assert whole.choices[0].logprobs is not None
    assert whole.choices[0].logprobs.content is not None
    assert whole.choices[0].logprobs.content[0].token == PLAIN_REPLY
    assert "".join(tokens) == text == PLAIN_REPLY


def test_n_choices(gateway: Server, stub: StubServer) -> None:
    """n=2 returns two choices through the SDK; the backend is asked once per choice."""
    before = len(stub.requests)
    with client(gateway) as sdk:
        completion = sdk.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Say hi."}],
            n=2,
            logprobs=True,  # only the stub-backed tier has logprobs: the stub answers
        )
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == [PLAIN_REPLY, PLAIN_REPLY]
    assert len(stub.requests) - before == 2
    assert completion.usage is not None
    assert completion.usage.total_tokens == 60


def test_n_choices_streamed(gateway: Server, stub: StubServer) -> None:
    """n=2 streamed through the SDK: chunks carry each choice's index, both choices are whole,
    each ends with its finish_reason, and the usage chunk counts both calls."""
    before = len(stub.requests)
    texts: dict[int, str] = {0: "", 1: ""}
    finished: dict[int, str | None] = {}
    usage = None
    with client(gateway) as sdk:
        stream = sdk.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Say hi."}],
            n=2,
            logprobs=True,  # only the stub-backed tier has logprobs: the stub answers
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason is not None:
                    finished[choice.index] = choice.finish_reason
    assert texts == {0: PLAIN_REPLY, 1: PLAIN_REPLY}
    assert finished == {0: "stop", 1: "stop"}
    assert len(stub.requests) - before == 2
    assert usage is not None
    assert usage.total_tokens == 60


def test_embeddings_go_to_an_embedding_backend(gateway: Server, stub: StubServer) -> None:
    """/v1/embeddings through the SDK (which asks for base64 by default and decodes it) reaches
    the one backend that serves embeddings, vectors in input order, with usage and cost."""
    with client(gateway) as sdk:
        raw = sdk.embeddings.with_raw_response.create(
            model="auto", input=["first text", "the second text"]
        )
        floats = sdk.embeddings.create(model="auto", input="one", encoding_format="float")
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.embeddings.create(model="tiny", input="no embeddings here")
    result = raw.parse()
    assert raw.headers["x-tiergate-backend"] == "agent"
    assert stub.last() == {
        "model": "stub-model",
        "input": ["one"],
        "encoding_format": "float",
    }
    assert [d.embedding for d in result.data] == [vector(0), vector(1)]
    assert [d.index for d in result.data] == [0, 1]
    assert result.usage.prompt_tokens == 5
    assert floats.data[0].embedding == vector(0)
    body: Any = refused.value.body
    assert body["code"] == "capability_unavailable"
    assert "tiny: lacks embeddings" in body["message"]


def test_ledger_breaks_savings_down_by_capability(gateway: Server) -> None:
    """The ledger recorded what each request needed; the report groups by it."""
    response = httpx.get(
        f"{gateway.base_url}/admin/report",
        params={"since": "1d", "by": "capability"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    groups = {g["key"]: g for g in response.json()["groups"]}
    assert {"tools", "json_mode", "vision", "long_context", "embeddings"} <= set(groups)
    assert groups["tools"]["requests"] >= 4


def test_policy_explain_shows_the_capability_filter(tmp_path: Path, stub: StubServer) -> None:
    """`tiergate policy explain --tools` lists what the request needs and which backends the
    filter excluded, and the tier it moved up to."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TOOL_POLICY.format(base_url=stub.base_url))
    result = subprocess.run(
        [tiergate_bin(), "policy", "explain", str(policy), "--prompt", "Hi there", "--tools"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "needs      tools" in out
    assert "tier       strong" in out
    assert "tiny: lacks tools" in out
    assert "small: lacks tools" in out
    assert "moved up to tier 'strong'" in out

"""End to end with the official ``anthropic`` SDK against a real ``tiergate serve``: extended
thinking from a remote Anthropic model (litellm talking to a real HTTP stub of Anthropic's API,
``_anthropic_upstream``): a tool-use conversation whose second request carries the first
answer's thinking block back upstream, and a stream with thinking and signature deltas."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types import MessageParam

from tests.e2e._anthropic_upstream import AnthropicStub, anthropic_stub
from tests.e2e.conftest import API_KEY, Server, serving
from tests.http.test_thinking_sdk import (
    QUESTION,
    STREAM_SIGNATURE,
    THINK,
    TOOL_ANSWER,
    TOOL_CALL,
    WEATHER,
)

KEY_ENV = "E2E_THINKING_ANTHROPIC_KEY"
POLICY = """
version: 1
backends:
  claude:
    type: remote
    model: anthropic/claude-sonnet-4-5-20250929
    api_base: {base_url}
    api_key_env: {key_env}
tiers:
  - {{name: remote, backends: [claude]}}
routes:
  auto: {{}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[AnthropicStub]:
    with anthropic_stub() as running:
        yield running


@pytest.fixture(scope="module")
def thinking_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: AnthropicStub
) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, "sk-ant-e2e-thinking-0123456789")
        policy = POLICY.format(base_url=upstream.base_url, key_env=KEY_ENV)
        with serving(tmp_path_factory.mktemp("e2e_thinking"), policy) as running:
            yield running


def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0)


def test_tool_use_with_thinking_round_trip(
    thinking_gateway: Server, upstream: AnthropicStub
) -> None:
    question: list[MessageParam] = [{"role": "user", "content": "What's the weather in Paris?"}]
    with client(thinking_gateway) as sdk:
        first = sdk.messages.create(
            model="auto", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=question
        )
        call = next(block for block in first.content if block.type == "tool_use")
        turns: list[MessageParam] = [
            *question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "88°F"}],
            },
        ]
        second = sdk.messages.create(
            model="auto", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=turns
        )
    assert [block.model_dump(exclude_none=True) for block in first.content] == TOOL_CALL["content"]
    body = upstream.requests[-1]
    assert body["thinking"] == THINK
    assistant = body["messages"][1]["content"]
    assert [block["type"] for block in assistant] == ["thinking", "text", "tool_use"]
    assert assistant[0] == TOOL_CALL["content"][0]
    assert second.content[0].type == "text"
    assert second.content[0].text == TOOL_ANSWER["content"][0]["text"]


def test_a_streamed_answer_with_thinking(thinking_gateway: Server) -> None:
    with (
        client(thinking_gateway) as sdk,
        sdk.messages.stream(
            model="auto", max_tokens=4096, thinking=THINK, messages=QUESTION
        ) as stream,
    ):
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert kinds == ["thinking_delta", "thinking_delta", "signature_delta", "text_delta"]
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.signature == STREAM_SIGNATURE
    assert text.type == "text"
    assert text.text == "27 * 453 = 12,231"

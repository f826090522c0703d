"""Earlier turns' extended-thinking blocks on the wire: sent back (through litellm, respx at
the HTTP layer) only to an Anthropic model and only with thinking on, before the turn's
``tool_use``; never to OpenAI through litellm, an OpenAI-compatible server or Ollama, which
cannot verify a signature. And streamed pieces joined into whole blocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import respx

from adapters.base import (
    ChatRequest,
    Message,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolCall,
    merge_thinking,
)
from adapters.config import RemoteConfig
from adapters.ollama.wire import build_messages
from adapters.openai_compat.wire import build_payload
from adapters.remote.backend import RemoteBackend
from adapters.remote.loader import load_litellm

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
KEY_ENV = "TIERGATE_TEST_THINKING_KEY"
SIGNATURE = "BDaL4VrbR2Oj0hO4XpJxT28J5TILnCrrUXoKiiNBZW9P+nr8XSj1zuZzAl4egiCCpQNvfyUuFFJP5Cnc"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmK"
REASONING = "The user wants to know the current weather in Paris."
WEATHER = Tool(
    name="get_weather",
    description="Get current weather for a location",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}},
)
CALL = ToolCall("toolu_01CswdEQBMshySk6Y9DFKrfq", "get_weather", '{"location": "Paris"}')
BLOCKS = (
    ThinkingBlock("thinking", REASONING, SIGNATURE),
    ThinkingBlock("redacted_thinking", data=REDACTED),
)
TURNS = (
    Message(role="user", content="What's the weather in Paris?"),
    Message(role="assistant", content="Let me check.", tool_calls=(CALL,), thinking=BLOCKS),
    Message(role="tool", content="88°F", tool_call_id=CALL.id),
)
ON = Thinking("enabled", budget_tokens=2048)
# https://docs.anthropic.com/en/api/messages (response) and the chat completion object.
ANTHROPIC_ANSWER = {
    "id": "msg_01B8w9d8a9qw8e",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Currently in Paris, the temperature is 88°F (31°C)"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 520, "output_tokens": 18},
}
OPENAI_ANSWER = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "It is 88°F in Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 9, "total_tokens": 91},
}


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    monkeypatch.setenv(KEY_ENV, "sk-test-thinking-0123456789")
    monkeypatch.setattr(load_litellm(), "disable_aiohttp_transport", True)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


def remote(model: str) -> RemoteBackend:
    return RemoteBackend("hosted", RemoteConfig(type="remote", model=model, api_key_env=KEY_ENV))


def request(thinking: Thinking | None) -> ChatRequest:
    return ChatRequest(messages=TURNS, tools=(WEATHER,), max_tokens=4096, thinking=thinking)


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


async def test_anthropic_gets_the_blocks_back_before_the_tool_use(
    hosted: respx.MockRouter,
) -> None:
    """With thinking on, the assistant turn reaches Anthropic as its thinking block (with
    signature), its redacted block, its text and its ``tool_use``, in that order, and
    thinking stays on for the call."""
    route = hosted.post(ANTHROPIC_URL).respond(200, json=ANTHROPIC_ANSWER)
    answer = await remote("anthropic/claude-sonnet-4-5-20250929").acomplete(request(ON))
    body = sent(route)
    assert body["thinking"] == ON.wire()
    content = body["messages"][1]["content"]
    assert [block["type"] for block in content] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
    ]
    assert content[0] == {"type": "thinking", "thinking": REASONING, "signature": SIGNATURE}
    assert content[1] == {"type": "redacted_thinking", "data": REDACTED}
    assert answer.text.startswith("Currently in Paris")
    assert answer.thinking == ()


@pytest.mark.parametrize("thinking", [Thinking("disabled"), None], ids=["disabled", "unset"])
async def test_without_thinking_on_the_blocks_stay_home(
    hosted: respx.MockRouter, thinking: Thinking | None
) -> None:
    """Anthropic refuses thinking blocks in a call with thinking off: they are left out."""
    route = hosted.post(ANTHROPIC_URL).respond(200, json=ANTHROPIC_ANSWER)
    await remote("anthropic/claude-sonnet-4-5-20250929").acomplete(request(thinking))
    body = sent(route)
    assert [block["type"] for block in body["messages"][1]["content"]] == ["text", "tool_use"]
    assert SIGNATURE not in json.dumps(body)


async def test_openai_through_litellm_never_sees_the_blocks(hosted: respx.MockRouter) -> None:
    route = hosted.post(OPENAI_URL).respond(200, json=OPENAI_ANSWER)
    answer = await remote("openai/gpt-4o-mini").acomplete(request(ON))
    body = json.dumps(sent(route))
    assert SIGNATURE not in body
    assert REDACTED not in body
    assert REASONING not in body
    assert answer.text == "It is 88°F in Paris."


def test_openai_compatible_and_ollama_payloads_leave_the_blocks_out() -> None:
    for payload in (build_payload("stub-model", request(ON)), build_messages(TURNS)):
        text = json.dumps(payload)
        assert "Let me check." in text
        assert SIGNATURE not in text
        assert REDACTED not in text
        assert REASONING not in text


def test_streamed_pieces_join_into_blocks() -> None:
    """Thinking text joins the open block until its signature; a redacted block stands alone;
    a stream cut before the signature leaves a block without one."""
    pieces = [
        ThinkingBlock("thinking", "Let me solve this step by step:"),
        ThinkingBlock("thinking", "\n2. 453 = 400 + 50 + 3"),
        ThinkingBlock("thinking", signature="EqQBCgIYAhIM"),
        ThinkingBlock("redacted_thinking", data=REDACTED),
        ThinkingBlock("thinking", "cut"),
    ]
    assert merge_thinking(pieces) == (
        ThinkingBlock(
            "thinking", "Let me solve this step by step:\n2. 453 = 400 + 50 + 3", "EqQBCgIYAhIM"
        ),
        ThinkingBlock("redacted_thinking", data=REDACTED),
        ThinkingBlock("thinking", "cut"),
    )


def test_a_blocks_repr_shows_neither_signature_nor_reasoning() -> None:
    """Messages and answers end up in logs and tracebacks: their blocks' repr is a size."""
    text = repr(TURNS[1])
    assert SIGNATURE not in text
    assert REDACTED not in text
    assert REASONING not in text

"""Tools, tool calls and results, JSON mode and images on the wire, at the HTTP layer, against
each provider's documented format (respx; nothing leaves the machine).

* Ollama's native /api/chat, https://github.com/ollama/ollama/blob/main/docs/api.md
  ("Chat request (with tools)", "Chat request (Structured outputs)", "Chat request (with
  images)", "Show Model Information"): ``tools`` in OpenAI's shape, ``message.tool_calls`` with
  ``function.arguments`` as an *object*, ``tool_name`` on tool results, ``format``, base64
  ``images``.
* OpenAI Chat Completions through litellm,
  https://platform.openai.com/docs/api-reference/chat/create and the chat object.
* Anthropic Messages through litellm, https://docs.anthropic.com/en/docs/build-with-claude/
  tool-use: ``tools`` with ``input_schema``, ``tool_use`` / ``tool_result`` content blocks,
  ``stop_reason: "tool_use"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import respx

from adapters.base import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    collect,
)
from adapters.config import OllamaConfig, RemoteConfig
from adapters.errors import BackendRejected
from adapters.ollama.backend import OllamaBackend
from adapters.openai_compat.wire import (
    build_embedding_payload,
    build_payload,
    parse_chunk,
    parse_embeddings,
    parse_response,
)
from adapters.remote.backend import RemoteBackend
from adapters.remote.loader import load_litellm
from tests.adapters.ollama import _upstream as _ollama_upstream

OLLAMA = "http://ollama.test:11434"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
KEY_ENV = "TIERGATE_TEST_WIRE_KEY"
SECRET = "sk-test-wire-0123456789abcdef"

# A schema with nesting, so a client that drops what it does not model would be caught.
WEATHER = Tool(
    name="get_current_weather",
    description="Get the current weather for a location",
    parameters={
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "e.g. San Francisco, CA"},
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "when": {
                "type": "object",
                "properties": {"day": {"type": "integer", "minimum": 1}},
                "additionalProperties": False,
            },
        },
        "required": ["location", "format"],
    },
)
WEATHER_JSON = {
    "type": "function",
    "function": {
        "name": WEATHER.name,
        "description": WEATHER.description,
        "parameters": dict(WEATHER.parameters),
    },
}
CALL = ToolCall(
    id="call_abc123",
    name="get_current_weather",
    arguments='{"location": "Paris, FR", "format": "celsius"}',
)
ROUND_TRIP = (
    Message(role="user", content="What is the weather today in Paris?"),
    Message(role="assistant", content="", tool_calls=(CALL,)),
    Message(role="tool", content="22 degrees, sunny", tool_call_id=CALL.id),
)
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
    "rkJggg=="
)


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


# --- Ollama -----------------------------------------------------------------------------------

# https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-with-tools (response)
OLLAMA_TOOL_RESPONSE: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2024-07-22T20:33:28.123648Z",
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "function": {
                    "name": "get_current_weather",
                    "arguments": {"format": "celsius", "location": "Paris, FR"},
                }
            }
        ],
    },
    "done_reason": "stop",
    "done": True,
    "total_duration": 885095291,
    "load_duration": 3753500,
    "prompt_eval_count": 122,
    "prompt_eval_duration": 328493000,
    "eval_count": 33,
    "eval_duration": 552222000,
}


@pytest.fixture
def ollama_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=OLLAMA, assert_all_called=False) as mock:
        yield mock


def ollama(**config: Any) -> OllamaBackend:
    return OllamaBackend(
        "local", OllamaConfig(type="ollama", model="llama3.2", base_url=OLLAMA, **config)
    )


async def test_ollama_tools_request_and_tool_call_answer(ollama_mock: respx.MockRouter) -> None:
    """Tools go out in Ollama's (OpenAI-shaped) form with the schema whole; earlier tool calls
    carry their arguments as an object and the tool result its function's name; the answer's
    tool call comes back with JSON-text arguments, an id and finish reason tool_calls."""
    route = ollama_mock.post("/api/chat").respond(200, json=OLLAMA_TOOL_RESPONSE)
    backend = ollama()
    result = await backend.acomplete(ChatRequest(messages=ROUND_TRIP, tools=(WEATHER,)))
    await backend.aclose()

    body = sent(route)
    assert body["tools"] == [WEATHER_JSON]
    assert body["stream"] is False
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "function": {
                    "name": "get_current_weather",
                    "arguments": {"location": "Paris, FR", "format": "celsius"},
                }
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "content": "22 degrees, sunny",
        "tool_name": "get_current_weather",
    }
    assert result.finish_reason == "tool_calls"
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert call.name == "get_current_weather"
    assert json.loads(call.arguments) == {"format": "celsius", "location": "Paris, FR"}
    assert call.id.startswith("call_")
    assert result.usage.prompt_tokens == 122


async def test_ollama_streamed_tool_call(ollama_mock: respx.MockRouter) -> None:
    """Streamed, Ollama sends the whole call in one line before the final one; it becomes one
    tool-call delta, and the stream ends with finish reason tool_calls."""
    first = {**OLLAMA_TOOL_RESPONSE, "done": False}
    for key in (
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        first.pop(key)
    final = {**OLLAMA_TOOL_RESPONSE, "message": {"role": "assistant", "content": ""}}
    ndjson = json.dumps(first) + "\n" + json.dumps(final) + "\n"
    ollama_mock.post("/api/chat").respond(
        200, content=ndjson.encode(), headers={"content-type": "application/x-ndjson"}
    )
    backend = ollama()
    chunks = [
        c async for c in backend.astream(ChatRequest(messages=ROUND_TRIP[:1], tools=(WEATHER,)))
    ]
    await backend.aclose()
    pieces = [p for c in chunks for p in c.tool_calls]
    assert len(pieces) == 1
    assert pieces[0].name == "get_current_weather"
    assert pieces[0].id is not None
    assert json.loads(pieces[0].arguments) == {"format": "celsius", "location": "Paris, FR"}
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (ResponseFormat(type="json_object"), "json"),
        (
            ResponseFormat(
                type="json_schema",
                name="weather",
                schema={"type": "object", "properties": {"temp": {"type": "number"}}},
            ),
            {"type": "object", "properties": {"temp": {"type": "number"}}},
        ),
    ],
)
async def test_ollama_json_mode_and_schema(
    ollama_mock: respx.MockRouter, response_format: ResponseFormat, expected: object
) -> None:
    """JSON mode is ``format: "json"``; a JSON schema goes as ``format`` itself (Ollama's
    structured outputs)."""
    answer = {
        **_ollama_upstream.final_fields({}, 3, "stop"),
        "model": "llama3.2",
        "created_at": "2024-12-06T00:48:09.983619Z",
        "message": {"role": "assistant", "content": '{"temp": 22}'},
    }
    route = ollama_mock.post("/api/chat").respond(200, json=answer)
    backend = ollama()
    result = await backend.acomplete(
        ChatRequest(messages=ROUND_TRIP[:1], response_format=response_format)
    )
    await backend.aclose()
    assert sent(route)["format"] == expected
    assert json.loads(result.text) == {"temp": 22}


async def test_ollama_images_go_as_base64(ollama_mock: respx.MockRouter) -> None:
    """A data: URL's base64 goes in the message's ``images``; a link is refused with the fix
    (Ollama cannot fetch it, and the gateway does not fetch for it)."""
    answer = {
        **_ollama_upstream.final_fields({}, 2, "stop"),
        "model": "llava",
        "created_at": "2023-12-13T22:42:50.203334Z",
        "message": {"role": "assistant", "content": "A pixel."},
    }
    route = ollama_mock.post("/api/chat").respond(200, json=answer)
    backend = ollama()
    image = ImagePart(url=f"data:image/png;base64,{PNG_B64}")
    await backend.acomplete(
        ChatRequest(messages=(Message(role="user", content="What is this?", images=(image,)),))
    )
    assert sent(route)["messages"][0] == {
        "role": "user",
        "content": "What is this?",
        "images": [PNG_B64],
    }
    link = ImagePart(url="https://example.com/cat.png")
    with pytest.raises(BackendRejected, match="data:image"):
        await backend.acomplete(
            ChatRequest(messages=(Message(role="user", content="?", images=(link,)),))
        )
    await backend.aclose()
    assert route.call_count == 1


async def test_ollama_capabilities_from_api_show(ollama_mock: respx.MockRouter) -> None:
    """prewarm reads /api/show: its capabilities list sets tools and vision; num_ctx, capped by
    the trained context length, is the window."""
    loaded = {
        "model": "llava",
        "created_at": "2023-12-18T19:52:07.071755Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "load",
        "done": True,
    }
    ollama_mock.post("/api/chat").respond(200, json=loaded)
    show = ollama_mock.post("/api/show").respond(
        200, json=_ollama_upstream.show(["completion", "vision"])
    )
    backend = ollama(num_ctx=8192)
    assert backend.capabilities.tools  # the defaults, before anything is known
    await backend.prewarm()
    await backend.aclose()
    assert json.loads(show.calls.last.request.content)["model"] == "llama3.2"
    caps = backend.capabilities
    assert caps.vision
    assert not caps.tools
    assert caps.json_mode
    assert caps.context_window == 8192


# --- OpenAI-compatible servers (pure wire mapping) ------------------------------------------


def test_openai_payload_carries_every_field() -> None:
    """tools, tool_choice, parallel_tool_calls, response_format, logprobs, user, tool-call and
    tool-result messages and image parts reach an OpenAI-compatible server as OpenAI spells
    them."""
    request = ChatRequest(
        messages=(
            Message(
                role="user",
                content="What is in this?",
                images=(ImagePart(url="https://example.com/a.png", detail="low"),),
            ),
            *ROUND_TRIP[1:],
        ),
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="function", name=WEATHER.name),
        parallel_tool_calls=False,
        response_format=ResponseFormat(
            type="json_schema", name="w", schema={"type": "object"}, strict=True
        ),
        logprobs=True,
        top_logprobs=2,
        user="user-42",
        seed=7,
        stop=("END",),
    )
    payload = build_payload("m", request)
    assert payload["tools"] == [WEATHER_JSON]
    assert payload["tool_choice"] == {"type": "function", "function": {"name": WEATHER.name}}
    assert payload["parallel_tool_calls"] is False
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert (payload["logprobs"], payload["top_logprobs"], payload["user"]) == (True, 2, "user-42")
    assert (payload["seed"], payload["stop"]) == (7, ["END"])
    assert payload["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": CALL.id,
                    "type": "function",
                    "function": {"name": CALL.name, "arguments": CALL.arguments},
                }
            ],
        },
        {"role": "tool", "content": "22 degrees, sunny", "tool_call_id": CALL.id},
    ]


def test_openai_reply_tool_calls_and_logprobs() -> None:
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    }
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": CALL.id,
                            "type": "function",
                            "function": {"name": CALL.name, "arguments": CALL.arguments},
                        }
                    ],
                },
                "logprobs": logprobs,
                "finish_reason": "tool_calls",
            }
        ],
    }
    result = parse_response(
        reply, ChatRequest(messages=ROUND_TRIP[:1]), backend="b", model="m", latency_ms=1.0
    )
    assert result.tool_calls == (CALL,)
    assert result.finish_reason == "tool_calls"
    assert result.logprobs == logprobs
    event = parse_chunk(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]},
                    "finish_reason": None,
                }
            ]
        }
    )
    assert event.tool_calls[0].arguments == '{"loc'
    assert event.tool_calls[0].id is None


# --- hosted providers through litellm --------------------------------------------------------


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    lib = load_litellm()
    saved = lib.disable_aiohttp_transport
    lib.disable_aiohttp_transport = True
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock
    lib.disable_aiohttp_transport = saved


def remote(model: str) -> RemoteBackend:
    return RemoteBackend("hosted", RemoteConfig(type="remote", model=model, api_key_env=KEY_ENV))


async def test_openai_tools_through_litellm(hosted: respx.MockRouter) -> None:
    """OpenAI gets the tools, tool_choice, response_format and tool turns as sent; its
    tool_calls answer comes back whole."""
    answer = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1699896916,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc123",
                            "type": "function",
                            "function": {
                                "name": "get_current_weather",
                                "arguments": '{"location": "Boston, MA"}',
                            },
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
    }
    route = hosted.post(OPENAI_URL).respond(200, json=answer)
    result = await remote("openai/gpt-4o-mini").acomplete(
        ChatRequest(
            messages=ROUND_TRIP,
            tools=(WEATHER,),
            tool_choice=ToolChoice(mode="auto"),
            response_format=ResponseFormat(type="json_object"),
            user="u-1",
        )
    )
    body = sent(route)
    assert body["tools"] == [WEATHER_JSON]
    assert body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert body["user"] == "u-1"
    assert body["messages"][1]["tool_calls"] == [
        {
            "id": CALL.id,
            "type": "function",
            "function": {"name": CALL.name, "arguments": CALL.arguments},
        }
    ]
    assert body["messages"][2] == {
        "role": "tool",
        "content": "22 degrees, sunny",
        "tool_call_id": CALL.id,
    }
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (
        ToolCall(
            id="call_abc123", name="get_current_weather", arguments='{"location": "Boston, MA"}'
        ),
    )


async def test_openai_streamed_tool_call_through_litellm(hosted: respx.MockRouter) -> None:
    """OpenAI's streamed tool-call pieces come through as deltas that join to the call."""

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    stream = (
        event(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_xyz",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": ""},
                    }
                ],
            }
        )
        + event({"tool_calls": [{"index": 0, "function": {"arguments": '{"location"'}}]})
        + event({"tool_calls": [{"index": 0, "function": {"arguments": ': "Oslo"}'}}]})
        + event({}, "tool_calls")
        + "data: [DONE]\n\n"
    )
    hosted.post(OPENAI_URL).respond(
        200, content=stream.encode(), headers={"content-type": "text/event-stream"}
    )
    backend = remote("openai/gpt-4o-mini")
    whole = await collect(
        "hosted", "m", backend.astream(ChatRequest(messages=ROUND_TRIP[:1], tools=(WEATHER,)))
    )
    assert whole.finish_reason == "tool_calls"
    assert whole.tool_calls == (
        ToolCall(id="call_xyz", name="get_current_weather", arguments='{"location": "Oslo"}'),
    )


async def test_anthropic_tools_through_litellm(hosted: respx.MockRouter) -> None:
    """Anthropic gets ``tools`` with ``input_schema``, the earlier call as a ``tool_use`` block
    and its result as a ``tool_result`` block; its ``tool_use`` answer becomes an OpenAI-style
    tool call."""
    answer = {
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [
            {"type": "text", "text": "I'll check the weather."},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_current_weather",
                "input": {"location": "San Francisco, CA", "format": "celsius"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 89},
    }
    route = hosted.post(ANTHROPIC_URL).respond(200, json=answer)
    result = await remote("anthropic/claude-haiku-4-5-20251001").acomplete(
        ChatRequest(messages=ROUND_TRIP, tools=(WEATHER,), max_tokens=256)
    )
    body = sent(route)
    # "type": "custom" marks a client tool (Anthropic's default when left out).
    assert [t.pop("type", "custom") for t in body["tools"]] == ["custom"]
    assert body["tools"] == [
        {
            "name": WEATHER.name,
            "description": WEATHER.description,
            "input_schema": dict(WEATHER.parameters),
        }
    ]
    assistant, tool_result = body["messages"][1], body["messages"][2]
    assert assistant["role"] == "assistant"
    assert {
        "type": "tool_use",
        "id": CALL.id,
        "name": CALL.name,
        "input": json.loads(CALL.arguments),
    } in [
        {k: v for k, v in block.items() if k != "cache_control"} for block in assistant["content"]
    ]
    assert tool_result["role"] == "user"
    block = tool_result["content"][0]
    assert block["type"] == "tool_result"
    assert block["tool_use_id"] == CALL.id
    assert "22 degrees, sunny" in json.dumps(block["content"])
    assert result.finish_reason == "tool_calls"
    assert result.text == "I'll check the weather."
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert (call.id, call.name) == ("toolu_01A09q90qw90lq917835lq9", "get_current_weather")
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "format": "celsius"}


# --- embeddings --------------------------------------------------------------------------------


async def test_ollama_embeddings(ollama_mock: respx.MockRouter) -> None:
    """/api/embed gets the inputs as a list; the vectors, prompt_eval_count and durations
    come back (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings)."""
    vectors = [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027, 0.06042469, 0.0]]
    answer = {
        "model": "all-minilm",
        "embeddings": vectors,
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 8,
    }
    route = ollama_mock.post("/api/embed").respond(200, json=answer)
    backend = OllamaBackend("emb", OllamaConfig(type="ollama", model="all-minilm", base_url=OLLAMA))
    result = await backend.aembed(EmbeddingRequest(inputs=("Why is the sky blue?", "Hi")))
    await backend.aclose()
    body = sent(route)
    assert body["model"] == "all-minilm"
    assert body["input"] == ["Why is the sky blue?", "Hi"]
    assert result.vectors == tuple(tuple(v) for v in vectors)
    assert result.usage.prompt_tokens == 8
    assert not result.usage.estimated
    assert result.timings.load_ms == pytest.approx(1.0195)


def test_openai_embeddings_wire() -> None:
    """The embeddings body asks for floats; the reply's vectors are put in ``index`` order."""
    request = EmbeddingRequest(inputs=("a", "b"), dimensions=3, user="u")
    assert build_embedding_payload("text-embedding-3-small", request) == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 3,
        "user": "u",
    }
    reply = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, 0.5, 0.0]},
            {"object": "embedding", "index": 0, "embedding": [1, 0, 0]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    vectors, usage = parse_embeddings(reply, request)
    assert vectors == ((1.0, 0.0, 0.0), (0.5, 0.5, 0.0))
    assert usage.prompt_tokens == 2


async def test_openai_embeddings_through_litellm(hosted: respx.MockRouter) -> None:
    """A hosted embedding model: OpenAI's /v1/embeddings body and answer, via litellm."""
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    route = hosted.post("https://api.openai.com/v1/embeddings").respond(200, json=answer)
    result = await remote("openai/text-embedding-3-small").aembed(
        EmbeddingRequest(inputs=("The food was delicious",))
    )
    body = sent(route)
    assert body["model"] == "text-embedding-3-small"
    assert body["input"] == ["The food was delicious"]
    assert route.calls.last.request.headers["authorization"] == f"Bearer {SECRET}"
    assert result.vectors == ((0.0023064255, -0.009327292),)
    assert result.usage.prompt_tokens == 8


async def test_anthropic_streamed_tool_use_through_litellm(hosted: respx.MockRouter) -> None:
    """Anthropic's streamed ``tool_use`` block (``content_block_start`` with the id and name,
    then ``input_json_delta`` pieces; https://docs.anthropic.com/en/docs/build-with-claude/
    streaming) joins into one OpenAI-style call; the stream ends with tool_calls."""

    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    tool = {
        "type": "tool_use",
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "get_current_weather",
        "input": {},
    }
    stream = (
        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-haiku-4-5-20251001",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 472, "output_tokens": 2},
                },
            },
        )
        + event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me check."},
            },
        )
        + event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + event(
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": tool},
        )
        + event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
            },
        )
        + event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
            },
        )
        + event("content_block_stop", {"type": "content_block_stop", "index": 1})
        + event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            },
        )
        + event("message_stop", {"type": "message_stop"})
    )
    hosted.post(ANTHROPIC_URL).respond(
        200, content=stream.encode(), headers={"content-type": "text/event-stream"}
    )
    backend = remote("anthropic/claude-haiku-4-5-20251001")
    whole = await collect(
        "hosted", "m", backend.astream(ChatRequest(messages=ROUND_TRIP[:1], tools=(WEATHER,)))
    )
    assert whole.text == "Let me check."
    assert whole.finish_reason == "tool_calls"
    assert len(whole.tool_calls) == 1
    call = whole.tool_calls[0]
    assert (call.id, call.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_current_weather")
    assert json.loads(call.arguments) == {"location": "San Francisco, CA"}


def test_remote_capabilities_come_from_litellms_map() -> None:
    """Once litellm is loaded, a hosted model's capabilities are read from its bundled map:
    gpt-4o-mini calls tools and sees images; an embedding model only embeds."""
    lib = load_litellm()
    chat_model = remote("openai/gpt-4o-mini").capabilities
    info = lib.get_model_info(model="openai/gpt-4o-mini")
    assert chat_model.tools is info["supports_function_calling"] is True
    assert chat_model.vision is info["supports_vision"] is True
    assert chat_model.context_window == info["max_input_tokens"]
    assert chat_model.max_output_tokens == info["max_output_tokens"]
    assert chat_model.chat
    assert not chat_model.embeddings
    embedder = remote("openai/text-embedding-3-small").capabilities
    assert embedder.embeddings
    assert not embedder.chat
    assert not embedder.tools


# OpenAI's chat completion with `logprobs: true, top_logprobs: 1`, as its API reference shows.
HELLO_LOGPROBS = {
    "content": [
        {
            "token": "Hello",
            "logprob": -0.31725305,
            "bytes": [72, 101, 108, 108, 111],
            "top_logprobs": [
                {"token": "Hello", "logprob": -0.31725305, "bytes": [72, 101, 108, 108, 111]}
            ],
        },
        {
            "token": "!",
            "logprob": -0.02380986,
            "bytes": [33],
            "top_logprobs": [{"token": "!", "logprob": -0.02380986, "bytes": [33]}],
        },
    ],
    "refusal": None,
}


async def test_openai_logprobs_through_litellm(hosted: respx.MockRouter) -> None:
    """logprobs and top_logprobs reach OpenAI; its logprobs come back whole and, streamed, with
    each piece of text."""
    answer = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1702685778,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "logprobs": HELLO_LOGPROBS,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    route = hosted.post(OPENAI_URL).respond(200, json=answer)
    request = ChatRequest(messages=ROUND_TRIP[:1], logprobs=True, top_logprobs=1)
    whole = await remote("openai/gpt-4o-mini").acomplete(request)
    body = sent(route)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 1)
    assert whole.text == "Hello!"
    assert whole.logprobs["content"] == HELLO_LOGPROBS["content"]

    def event(delta: dict[str, Any], logprobs: Any, finish: str | None = None) -> str:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
        return f"data: {json.dumps(body)}\n\n"

    first, second = HELLO_LOGPROBS["content"]  # type: ignore[misc]
    stream = (
        event({"role": "assistant", "content": ""}, {"content": [], "refusal": None})
        + event({"content": "Hello"}, {"content": [first], "refusal": None})
        + event({"content": "!"}, {"content": [second], "refusal": None})
        + event({}, None, "stop")
        + "data: [DONE]\n\n"
    )
    hosted.post(OPENAI_URL).respond(
        200, content=stream.encode(), headers={"content-type": "text/event-stream"}
    )
    chunks = [c async for c in remote("openai/gpt-4o-mini").astream(request)]
    pieces = [(c.delta, c.logprobs["content"]) for c in chunks if c.delta]
    assert pieces == [("Hello", [first]), ("!", [second])]


def test_remote_logprobs_capability_follows_the_provider() -> None:
    """OpenAI's chat models give logprobs; its reasoning models and Anthropic's do not."""
    load_litellm()
    assert remote("openai/gpt-4o-mini").capabilities.logprobs
    assert not remote("openai/o3-mini").capabilities.logprobs
    assert not remote("anthropic/claude-3-5-sonnet-20241022").capabilities.logprobs

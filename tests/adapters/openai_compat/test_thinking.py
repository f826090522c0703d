"""A reasoning model's thinking through the openai_compat adapter, mocked at the HTTP layer with
respx: the message's ``reasoning_content`` (llama.cpp's server, vLLM before 0.11) or
``reasoning`` (vLLM since 0.11) becomes the answer's unsigned ``thinking`` blocks, whole and
streamed (``delta.reasoning_content`` / ``delta.reasoning``).

Bodies follow the servers' documentation: vLLM's "Reasoning Outputs"
(https://docs.vllm.ai/en/latest/features/reasoning_outputs/: ``reasoning_content``, renamed
``reasoning`` in 0.11) and llama.cpp's server README (``--reasoning-format deepseek`` puts the
thinking in ``message.reasoning_content``, streamed as ``delta.reasoning_content``), in the
chat completion object's shape, https://platform.openai.com/docs/api-reference/chat/object.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from adapters.base import ChatRequest, Thinking, ThinkingBlock, collect
from adapters.config import OpenAICompatConfig
from adapters.errors import BackendBadResponse
from adapters.openai_compat.backend import OpenAICompatBackend

BASE_URL = "http://reasoner.test/v1"
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
REASONING = "9.11 has a smaller fractional part than 9.8, so 9.8 is greater."
ANSWER = "9.8 is greater than 9.11."
USAGE = {"prompt_tokens": 18, "completion_tokens": 57, "total_tokens": 75}
THOUGHT_PIECES = ("9.11 has a smaller", " fractional part than 9.8,", " so 9.8 is greater.")
ANSWER_PIECES = ("9.8 is greater", " than 9.11.")
FIELDS = [
    pytest.param("reasoning_content", id="reasoning_content"),
    pytest.param("reasoning", id="reasoning-vllm-0.11"),
]


def completion(field: str, reasoning: object = REASONING, usage: Any = USAGE) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-8f1c2e",
        "object": "chat.completion",
        "created": 1738000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER, field: reasoning},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-8f1c2e",
        "object": "chat.completion.chunk",
        "created": 1738000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def stream_events(field: str, *, usage: bool = True) -> list[dict[str, Any]]:
    """The role, the reasoning's pieces, the content's, the finish, then (asked for) usage."""
    events = [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({field: piece}) for piece in THOUGHT_PIECES),
        *(chunk({"content": piece}) for piece in ANSWER_PIECES),
        chunk({}, "stop"),
    ]
    if usage:
        events.append({**chunk({}), "choices": [], "usage": USAGE})
    return events


def sse(events: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def ask(thinking: Thinking | None = None) -> ChatRequest:
    return dataclasses.replace(
        ChatRequest.from_prompt("9.11 and 9.8, which is greater?"), thinking=thinking
    )


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def backend() -> AsyncIterator[OpenAICompatBackend]:
    config = {"type": "openai_compat", "model": MODEL, "base_url": BASE_URL, "http_client": "httpx"}
    backend = OpenAICompatBackend("local", OpenAICompatConfig.model_validate(config))
    yield backend
    await backend.aclose()


@pytest.mark.parametrize("field", FIELDS)
async def test_the_whole_answer_carries_the_reasoning_as_an_unsigned_thinking_block(
    api: respx.MockRouter, backend: OpenAICompatBackend, field: str
) -> None:
    """The message's reasoning becomes one ``thinking`` block with an empty signature, apart
    from the text; the server's ``completion_tokens`` (reasoning included) is the usage."""
    api.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(field)))
    answer = await backend.acomplete(ask())
    assert answer.thinking == (ThinkingBlock("thinking", REASONING, ""),)
    assert answer.reasoning == REASONING
    assert answer.text == ANSWER
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (18, 57)


@pytest.mark.parametrize("field", FIELDS)
async def test_a_stream_brings_the_reasoning_in_pieces_before_the_text(
    api: respx.MockRouter, backend: OpenAICompatBackend, field: str
) -> None:
    """Each reasoning delta becomes a chunk with a thinking piece and no text; joined, the
    pieces make one unsigned block; the time to first token is the first reasoning piece's."""
    api.post("/chat/completions").mock(return_value=sse(stream_events(field)))
    chunks = [c async for c in backend.astream(ask(Thinking("adaptive")))]
    thought = [c for c in chunks if c.thinking]
    assert [c.thinking for c in thought] == [
        (ThinkingBlock("thinking", piece),) for piece in THOUGHT_PIECES
    ]
    assert all(c.delta == "" for c in thought)
    assert chunks[: len(thought)] == thought
    assert [c.delta for c in chunks if c.delta] == list(ANSWER_PIECES)
    final = chunks[-1]
    assert final.usage is not None
    assert final.usage.completion_tokens == 57
    assert final.timings is not None
    assert final.timings.ttft_ms is not None

    api.post("/chat/completions").mock(return_value=sse(stream_events(field)))
    whole = await collect("local", MODEL, backend.astream(ask()))
    assert whole.thinking == (ThinkingBlock("thinking", "".join(THOUGHT_PIECES), ""),)
    assert whole.text == ANSWER


async def test_thinking_turned_off_or_omitted_brings_no_block(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """The server cannot be told, and may reason anyway: a request that turned thinking off or
    asked for it omitted gets no block, whole or streamed, where one that said nothing gets
    it; the text comes as usual."""
    route = api.post("/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("reasoning_content"))
    )
    assert (await backend.acomplete(ask())).thinking != ()
    for thinking in (
        Thinking("disabled"),
        Thinking("enabled", budget_tokens=1024, display="omitted"),
    ):
        route.mock(return_value=httpx.Response(200, json=completion("reasoning_content")))
        answer = await backend.acomplete(ask(thinking))
        route.mock(return_value=sse(stream_events("reasoning_content")))
        chunks = [c async for c in backend.astream(ask(thinking))]
        assert answer.thinking == ()
        assert answer.text == ANSWER
        assert all(c.thinking == () for c in chunks)
        assert "".join(c.delta for c in chunks) == ANSWER


async def test_estimated_usage_counts_the_reasoning(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A server that sends no usage gets an estimate of every generated token, the
    reasoning's included: its characters whole, one token per chunk streamed."""
    route = api.post("/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("reasoning_content", usage=None))
    )
    answer = await backend.acomplete(ask())
    route.mock(return_value=sse(stream_events("reasoning_content", usage=False)))
    chunks = [c async for c in backend.astream(ask())]
    assert answer.usage.estimated is True
    assert answer.usage.completion_tokens == -(-len(REASONING + ANSWER) // 4)
    final = chunks[-1].usage
    assert final is not None
    assert final.estimated is True
    assert final.completion_tokens == len(THOUGHT_PIECES) + len(ANSWER_PIECES)


async def test_reasoning_content_is_preferred_and_null_is_none(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """Both fields sent: ``reasoning_content`` is read; ``null`` (a model that did not reason)
    is no block."""
    both = completion("reasoning_content")
    both["choices"][0]["message"]["reasoning"] = "something else"
    route = api.post("/chat/completions").mock(return_value=httpx.Response(200, json=both))
    answer = await backend.acomplete(ask())
    route.mock(return_value=httpx.Response(200, json=completion("reasoning_content", None)))
    plain = await backend.acomplete(ask())
    assert answer.reasoning == REASONING
    assert plain.thinking == ()
    assert plain.text == ANSWER


async def test_reasoning_that_is_not_text_is_a_bad_response(
    api: respx.MockRouter, backend: OpenAICompatBackend
) -> None:
    """A reasoning field that is not a string is a malformed reply, named as such."""
    api.post("/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("reasoning_content", {"text": "x"}))
    )
    with pytest.raises(BackendBadResponse, match=r"reasoning_content is not text"):
        await backend.acomplete(ask())

"""A thinking model's reasoning through the ollama adapter: Ollama's ``message.thinking``
becomes the answer's unsigned ``thinking`` blocks, whole and streamed, mocked at the HTTP layer
with respx.

Bodies follow Ollama's API documentation,
https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-with-thinking: the whole
answer carries ``message.thinking`` beside ``message.content``; a stream sends the reasoning's
pieces in lines of their own (empty ``content``) before the content's, and the final ``done``
line's ``eval_count`` counts every generated token, the reasoning's included.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from adapters.base import ChatRequest, Chunk, Thinking, ThinkingBlock, collect
from adapters.config import OllamaConfig
from adapters.errors import BackendBadResponse
from adapters.ollama.backend import OllamaBackend
from tests.adapters.ollama import _upstream

BASE = "http://ollama-think.test:11434"
MODEL = "qwen3"
REASONING = "Okay, the user asks why the sky is blue. Shorter wavelengths scatter more."
ANSWER = "The sky is blue because of Rayleigh scattering."
COUNTS: dict[str, Any] = {
    "done_reason": "stop",
    "done": True,
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 14,
    "prompt_eval_duration": 383809000,
    "eval_count": 61,  # the reasoning's tokens and the answer's
    "eval_duration": 4799921000,
}
WHOLE: dict[str, Any] = {
    "model": MODEL,
    "created_at": "2025-05-29T09:35:56.836222Z",
    "message": {"role": "assistant", "content": ANSWER, "thinking": REASONING},
    **COUNTS,
}
THOUGHT_PIECES = (
    "Okay, the user asks",
    " why the sky is blue.",
    " Shorter wavelengths scatter more.",
)
ANSWER_PIECES = ("The sky is blue", " because of Rayleigh scattering.")


def _line(content: str, thinking: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    return {
        "model": MODEL,
        "created_at": "2025-05-29T09:35:56.836222Z",
        "message": message,
        "done": False,
    }


STREAM: list[dict[str, Any]] = [
    *(_line("", piece) for piece in THOUGHT_PIECES),
    *(_line(piece) for piece in ANSWER_PIECES),
    {**_line(""), **COUNTS},
]

SHOWN = [
    pytest.param(None, id="unset"),
    pytest.param(Thinking("enabled", budget_tokens=2048), id="enabled"),
    pytest.param(Thinking("adaptive"), id="adaptive"),
    pytest.param(Thinking("enabled", budget_tokens=2048, display="summarized"), id="summarized"),
]


def ndjson(lines: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.Response(
        200, content=body.encode(), headers={"content-type": "application/x-ndjson"}
    )


def ask(thinking: Thinking | None) -> ChatRequest:
    return dataclasses.replace(ChatRequest.from_prompt("Why is the sky blue?"), thinking=thinking)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        shown = _upstream.show(["completion", "thinking"])
        router.post("/api/show").mock(return_value=httpx.Response(200, json=shown))
        yield router


@pytest.fixture
async def backend(mock: respx.MockRouter) -> AsyncIterator[OllamaBackend]:
    """A backend that has read ``/api/show`` (the model can think) as it does at startup."""
    mock.post("/api/chat").mock(side_effect=_upstream.chat)  # the load, an empty chat
    ollama = OllamaBackend("local", OllamaConfig(type="ollama", model=MODEL, base_url=BASE))
    await ollama.prewarm()
    yield ollama
    await ollama.aclose()


async def drain(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("thinking", SHOWN)
async def test_the_whole_answer_carries_the_reasoning_as_an_unsigned_thinking_block(
    mock: respx.MockRouter, backend: OllamaBackend, thinking: Thinking | None
) -> None:
    """``message.thinking`` becomes one ``thinking`` block with an empty signature (Ollama
    signs nothing), before the text, which stays the content alone; ``eval_count`` (the
    reasoning's tokens included) is the answer's completion tokens."""
    mock.post("/api/chat").mock(return_value=httpx.Response(200, json=WHOLE))
    answer = await backend.acomplete(ask(thinking))
    assert answer.thinking == (ThinkingBlock("thinking", REASONING, ""),)
    assert answer.thinking[0].wire() == {"type": "thinking", "thinking": REASONING, "signature": ""}
    assert answer.reasoning == REASONING
    assert answer.text == ANSWER
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (14, 61)
    assert answer.usage.estimated is False
    # ``"thinking": ""`` (a thinking model told not to think) is no block.
    message = {"role": "assistant", "content": ANSWER, "thinking": ""}
    mock.post("/api/chat").mock(
        return_value=httpx.Response(200, json={**WHOLE, "message": message})
    )
    assert (await backend.acomplete(ask(thinking))).thinking == ()


async def test_thinking_turned_off_or_omitted_brings_no_block(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """A request that turned thinking off (a model may think anyway) or asked for it omitted
    gets no block, whole or streamed, where one that said nothing gets it; the tokens the
    reasoning cost are counted all the same."""
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=WHOLE))
    assert (await backend.acomplete(ask(None))).thinking != ()
    for thinking in (Thinking("disabled"), Thinking("adaptive", display="omitted")):
        route.mock(return_value=httpx.Response(200, json=WHOLE))
        answer = await backend.acomplete(ask(thinking))
        route.mock(return_value=ndjson(STREAM))
        chunks = await drain(backend.astream(ask(thinking)))
        assert answer.thinking == ()
        assert answer.text == ANSWER
        assert answer.usage.completion_tokens == 61
        assert all(chunk.thinking == () for chunk in chunks)
        assert "".join(chunk.delta for chunk in chunks) == ANSWER
        final = chunks[-1].usage
        assert final is not None
        assert final.completion_tokens == 61


@pytest.mark.parametrize("thinking", SHOWN)
async def test_a_stream_brings_the_reasoning_in_pieces_before_the_text(
    mock: respx.MockRouter, backend: OllamaBackend, thinking: Thinking | None
) -> None:
    """Each reasoning line becomes a chunk with a thinking piece (no text, no signature); the
    text follows; joined, the pieces make one unsigned block. The time to first token is the
    first reasoning line's, and the final line's counts are the usage."""
    mock.post("/api/chat").mock(return_value=ndjson(STREAM))
    chunks = await drain(backend.astream(ask(thinking)))
    thought = [c for c in chunks if c.thinking]
    assert [c.thinking for c in thought] == [
        (ThinkingBlock("thinking", piece),) for piece in THOUGHT_PIECES
    ]
    assert all(c.delta == "" for c in thought)
    assert chunks[: len(thought)] == thought  # the reasoning comes first
    assert [c.delta for c in chunks if c.delta] == list(ANSWER_PIECES)
    final = chunks[-1]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (14, 61)
    assert final.timings is not None
    assert final.timings.ttft_ms is not None
    assert 0 < final.timings.ttft_ms <= final.timings.latency_ms

    mock.post("/api/chat").mock(return_value=ndjson(STREAM))
    whole = await collect("local", MODEL, backend.astream(ask(thinking)))
    assert whole.thinking == (ThinkingBlock("thinking", "".join(THOUGHT_PIECES), ""),)
    assert whole.text == ANSWER


async def test_estimated_usage_counts_the_reasoning(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """A server that leaves ``eval_count`` out gets an estimate of every generated token,
    the reasoning's included (about four characters a token), whole and streamed."""
    uncounted = ("eval_count", "prompt_eval_count")
    counts = {k: v for k, v in COUNTS.items() if k not in uncounted}
    whole = {k: v for k, v in WHOLE.items() if k not in uncounted}
    route = mock.post("/api/chat").mock(return_value=httpx.Response(200, json=whole))
    answer = await backend.acomplete(ask(None))
    route.mock(return_value=ndjson([*STREAM[:-1], {**_line(""), **counts}]))
    streamed = await collect("local", MODEL, backend.astream(ask(None)))
    expected = -(-len(REASONING + ANSWER) // 4)
    for usage in (answer.usage, streamed.usage):
        assert usage.estimated is True
        assert usage.completion_tokens == expected


async def test_reasoning_that_is_not_text_is_a_bad_response(
    mock: respx.MockRouter, backend: OllamaBackend
) -> None:
    """A ``message.thinking`` that is not a string is a malformed reply, said as such."""
    message = {"role": "assistant", "content": ANSWER, "thinking": ["no"]}
    mock.post("/api/chat").mock(
        return_value=httpx.Response(200, json={**WHOLE, "message": message})
    )
    with pytest.raises(BackendBadResponse, match=r"message\.thinking is not text"):
        await backend.acomplete(ask(None))

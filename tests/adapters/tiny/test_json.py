"""The in-process model's capabilities (the real SmolLM2-135M): JSON output by llama.cpp's
grammar-constrained decoding (only tokens that keep the text valid under the schema are
sampled), and a context window the GGUF's metadata caps."""

from __future__ import annotations

import json

import pytest

from adapters.base import ChatRequest, Message, ResponseFormat
from adapters.capabilities import TINY
from adapters.config import TinyConfig
from adapters.errors import BackendRejected
from adapters.tiny.backend import TinyBackend

SCHEMA = {
    "type": "object",
    "properties": {
        "sure": {"type": "boolean"},
        "colour": {"type": "string", "enum": ["blue", "red", "green"]},
    },
    "required": ["sure", "colour"],
    "additionalProperties": False,
}
QUESTION = (Message(role="user", content="What colour is the sky? Answer in JSON."),)


async def test_json_schema_answer_is_valid_json() -> None:
    """Whole and streamed, the answer parses and matches the schema's shape."""
    backend = TinyBackend("tiny", TinyConfig(type="tiny"))
    request = ChatRequest(
        messages=QUESTION,
        max_tokens=40,
        temperature=0,
        response_format=ResponseFormat(type="json_schema", name="sky", schema=SCHEMA),
    )
    try:
        whole = await backend.acomplete(request)
        streamed = "".join([c.delta async for c in backend.astream(request)])
    finally:
        await backend.aclose()
    answer = json.loads(whole.text)
    assert set(answer) == {"sure", "colour"}
    assert isinstance(answer["sure"], bool)
    assert answer["colour"] in ("blue", "red", "green")
    assert whole.finish_reason == "stop"
    assert streamed == whole.text


async def test_a_schema_llama_cpp_cannot_compile_is_rejected() -> None:
    backend = TinyBackend("tiny", TinyConfig(type="tiny"))
    bad = ResponseFormat(type="json_schema", schema={"type": "object", "properties": 5})
    try:
        with pytest.raises(BackendRejected, match="grammar"):
            await backend.acomplete(
                ChatRequest(messages=QUESTION, max_tokens=8, response_format=bad)
            )
    finally:
        await backend.aclose()


def test_json_is_off_by_default_for_the_tiny_tier() -> None:
    """Opt-in only (see adapters.capabilities): the router keeps JSON requests off tiny."""
    assert not TINY.json_mode
    assert not TINY.json_schema
    assert not TINY.tools


async def test_window_is_capped_by_the_gguf_trained_context() -> None:
    """SmolLM2-135M's GGUF says it was trained for 8192 tokens: an n_ctx above that is not
    offered to the router once the model is loaded."""
    backend = TinyBackend("tiny", TinyConfig(type="tiny", n_ctx=16384, prefix_cache_mb=0))
    assert backend.context_window == 16384  # not loaded yet: only the configuration is known
    try:
        await backend.prewarm()
        assert backend.context_window == 8192
    finally:
        await backend.aclose()

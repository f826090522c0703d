"""How the remote adapter talks to litellm: pure request and response mapping.

litellm takes OpenAI-shaped keyword arguments for every provider and answers with OpenAI-shaped
objects (``ModelResponse``, ``ModelResponseStream``), so one mapping serves OpenAI, Anthropic and
the rest. Nothing here imports litellm; the objects are read by attribute or key.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from adapters._openai_shape import (
    message_json,
    parse_tool_call_deltas,
    parse_tool_calls,
    tool_fields,
)
from adapters.chat import ChatRequest, ToolCall, ToolCallDelta, Usage
from adapters.thinking import ThinkingBlock

# Providers whose native API takes top_k. litellm forwards unknown parameters verbatim (to
# OpenAI as extra_body, which OpenAI answers with HTTP 400), so for everyone else we drop it.
TOP_K_PROVIDERS = frozenset(
    {"anthropic", "gemini", "vertex_ai", "ollama", "ollama_chat", "openrouter", "together_ai"}
)
# Response headers in which a provider reports its own processing time, in milliseconds.
SERVER_MS_HEADERS = ("openai-processing-ms",)
# Providers through which litellm turns a content block's ``cache_control`` into Anthropic
# prompt caching for Claude: Anthropic's own API and Vertex AI pass the block on as it is;
# Bedrock's Converse API gets a ``cachePoint`` after it (litellm 1.102.4). On Vertex AI, litellm
# turns the same marker on a *Gemini* model into a context-cache upload (an extra API call and
# storage billed by the hour), so only Claude models qualify.
CACHE_CONTROL_PROVIDERS = frozenset({"anthropic", "bedrock", "vertex_ai"})
# Anthropic accepts at most four cache breakpoints per request.
MAX_CACHE_BREAKPOINTS = 4
EPHEMERAL: Mapping[str, str] = MappingProxyType({"type": "ephemeral"})


class MalformedAnswer(ValueError):
    """An answer without a readable message, tool calls or vectors; says what is wrong."""


def takes_cache_control(provider: str, model: str) -> bool:
    """Whether ``cache_control`` on a system message means Anthropic prompt caching here."""
    if provider not in CACHE_CONTROL_PROVIDERS:
        return False
    return provider == "anthropic" or "claude" in model.lower()


def takes_thinking_blocks(provider: str, model: str) -> bool:
    """Whether earlier turns' thinking blocks may be sent back here: only to Anthropic's Claude
    models (Anthropic's API, Bedrock, Vertex AI), the only ones that can verify a signature.
    Every other model gets the conversation without them."""
    return takes_cache_control(provider, model)


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (four characters a token), enough to compare with a threshold."""
    return len(text) // 4


def _cached_system_turns(request: ChatRequest, min_tokens: int | None) -> frozenset[int]:
    """Indices of the system messages to mark: those of at least ``min_tokens`` (estimated),
    the last four when more qualify (a later breakpoint caches the longer prefix)."""
    if min_tokens is None:
        return frozenset()
    long = [
        index
        for index, message in enumerate(request.messages)
        if message.role == "system" and estimate_tokens(message.content) >= min_tokens
    ]
    return frozenset(long[-MAX_CACHE_BREAKPOINTS:])


def build_payload(
    model: str,
    request: ChatRequest,
    *,
    stream: bool,
    top_k_supported: bool,
    cache_system_min_tokens: int | None = None,
    thinking_blocks: bool = False,
) -> dict[str, Any]:
    """The litellm keyword arguments for one chat request (without credentials or transport).

    With ``cache_system_min_tokens`` (only for models where ``takes_cache_control``), each
    system message at least that long is sent as a text block marked
    ``cache_control: {"type": "ephemeral"}``, litellm's form of Anthropic prompt caching.
    With ``thinking_blocks`` (only for models where ``takes_thinking_blocks``) and thinking on,
    assistant turns carry their thinking blocks as litellm's ``thinking_blocks``, which it sends
    to Anthropic before the turn's text and ``tool_use`` blocks.
    """
    cached = _cached_system_turns(request, cache_system_min_tokens)
    carry = thinking_blocks and request.thinking is not None and request.thinking.on
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        item = message_json(message)
        if index in cached:
            item["content"] = [
                {"type": "text", "text": message.content, "cache_control": dict(EPHEMERAL)}
            ]
        if carry and message.role == "assistant" and message.thinking:
            item["thinking_blocks"] = [block.wire() for block in message.thinking]
        messages.append(item)
    payload: dict[str, Any] = {"model": model, "messages": messages}
    optional: dict[str, Any] = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        # litellm drops them (drop_params) for providers without them, as Anthropic.
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "top_k": request.top_k if top_k_supported else None,
        "stop": list(request.stop) or None,
        # litellm sends it to OpenAI's reasoning models, turns it into a thinking budget for
        # Anthropic's, and drops it (drop_params) for models without one.
        "reasoning_effort": request.reasoning_effort,
        # Anthropic's extended thinking: litellm passes it to Anthropic's models as it is.
        "thinking": _thinking(request, messages),
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    payload.update(tool_fields(request))
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def _thinking(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, str | int] | None:
    """The request's extended thinking, unless the last turn that called tools comes without
    its thinking blocks (a client that dropped them, or blocks this model cannot take) and no
    turn has any: Anthropic wants the thinking block that answer began with sent back before
    the calls, so thinking on would be refused ("Expected `thinking` or `redacted_thinking`,
    but found `tool_use`"). Such a call goes without thinking, as litellm's ``modify_params``
    would send it (litellm's rule)."""
    thinking = request.thinking
    if thinking is None:
        return None
    if not thinking.on or any("thinking_blocks" in m for m in messages):
        return thinking.wire()
    calling = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    if calling:
        return None
    return thinking.wire()


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_usage(usage: Any) -> Usage | None:
    """Token counts as litellm reports them. Cached prompt tokens come from OpenAI's
    ``prompt_tokens_details.cached_tokens`` or Anthropic's ``cache_read_input_tokens``."""
    if usage is None:
        return None
    prompt = _count(_get(usage, "prompt_tokens"))
    completion = _count(_get(usage, "completion_tokens"))
    if prompt is None and completion is None:
        return None
    cached = _count(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
    if not cached:
        cached = _count(_get(usage, "cache_read_input_tokens"))
    return Usage(
        prompt_tokens=prompt or 0,
        completion_tokens=completion or 0,
        cached_tokens=cached or 0,
        cache_write_tokens=parse_cache_writes(usage),
    )


def parse_cache_writes(usage: Any) -> int:
    """Prompt tokens the provider wrote to its prompt cache (Anthropic's
    ``cache_creation_input_tokens``; litellm also keeps it as
    ``prompt_tokens_details.cache_creation_tokens``). litellm counts them inside
    ``prompt_tokens`` too; Anthropic bills them above the plain input rate."""
    if usage is None:
        return 0
    written = _count(_get(usage, "cache_creation_input_tokens"))
    if not written:
        written = _count(_get(_get(usage, "prompt_tokens_details"), "cache_creation_tokens"))
    return written or 0


def parse_response(response: Any) -> tuple[str, str | None, Usage | None]:
    """Text, raw finish reason and usage of a whole answer; ``MalformedAnswer`` when it has
    none."""
    choices = _get(response, "choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer("the answer has no choices")
    first = choices[0]
    content = _get(_get(first, "message"), "content")
    if content is None:
        content = ""  # a refusal or tool call carries no text
    if not isinstance(content, str):
        raise MalformedAnswer(f"the answer's content is a {type(content).__name__}, not text")
    finish = _get(first, "finish_reason")
    return (
        content,
        finish if isinstance(finish, str) else None,
        parse_usage(_get(response, "usage")),
    )


def _thinking_block(raw: Any) -> ThinkingBlock | None:
    kind = _get(raw, "type")
    if kind == "redacted_thinking":
        data = _get(raw, "data")
        return ThinkingBlock("redacted_thinking", data=data) if isinstance(data, str) else None
    if kind != "thinking":
        return None
    text, signature = _get(raw, "thinking"), _get(raw, "signature")
    return ThinkingBlock(
        "thinking",
        text if isinstance(text, str) else "",
        signature if isinstance(signature, str) else "",
    )


def parse_response_thinking(response: Any) -> tuple[ThinkingBlock, ...]:
    """The thinking blocks an Anthropic model's answer began with (litellm keeps them, in
    order and with their signatures, as the message's ``thinking_blocks``); none for other
    providers."""
    choices = _get(response, "choices")
    if not isinstance(choices, list) or not choices:
        return ()
    raw = _get(_get(choices[0], "message"), "thinking_blocks")
    if not isinstance(raw, list):
        return ()
    return tuple(block for item in raw if (block := _thinking_block(item)) is not None)


def parse_chunk_thinking(chunk: Any) -> tuple[ThinkingBlock, ...]:
    """The thinking pieces of one streamed chunk, as ``merge_thinking`` joins them. litellm
    turns Anthropic's ``thinking_delta`` into a block with that text, its ``signature_delta``
    into a block with the signature and *all* the block's text again (dropped here: the text
    came piece by piece), and a ``redacted_thinking`` block's start into that block."""
    choices = _get(chunk, "choices")
    if not isinstance(choices, list) or not choices:
        return ()
    raw = _get(_get(choices[0], "delta"), "thinking_blocks")
    if not isinstance(raw, list):
        return ()
    pieces: list[ThinkingBlock] = []
    for item in raw:
        block = _thinking_block(item)
        if block is None:
            continue
        if block.signature:
            block = ThinkingBlock("thinking", signature=block.signature)
        if block.thinking or block.signature or block.data:
            pieces.append(block)
    return tuple(pieces)


def parse_chunk(chunk: Any) -> tuple[str, str | None, Usage | None]:
    """Text delta, raw finish reason and usage of one streamed chunk (all may be empty)."""
    text = ""
    finish: str | None = None
    choices = _get(chunk, "choices")
    if isinstance(choices, list) and choices:
        first = choices[0]
        content = _get(_get(first, "delta"), "content")
        text = content if isinstance(content, str) else ""
        raw_finish = _get(first, "finish_reason")
        finish = raw_finish if isinstance(raw_finish, str) else None
    return text, finish, parse_usage(_get(chunk, "usage"))


def _plain(value: Any) -> Any:
    """litellm's pydantic objects as plain JSON values (``None`` stays ``None``)."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def parse_logprobs(obj: Any, *, streamed: bool) -> Any:
    """The first choice's OpenAI-shaped ``logprobs`` of an answer or a streamed chunk, as plain
    JSON; ``None`` when the provider sent none."""
    choices = _get(obj, "choices")
    if not isinstance(choices, list) or not choices:
        return None
    value = _plain(_get(choices[0], "logprobs"))
    if isinstance(value, dict) and not value.get("content") and streamed:
        return None  # a chunk without tokens of its own
    return value if isinstance(value, dict) else None


def parse_response_tool_calls(response: Any) -> tuple[ToolCall, ...]:
    """The tool calls of a whole answer (litellm gives every provider's in OpenAI's shape,
    Anthropic's ``tool_use`` blocks included); ``MalformedAnswer`` when one is malformed."""
    choices = _get(response, "choices")
    if not isinstance(choices, list) or not choices:
        return ()
    try:
        return parse_tool_calls(_get(choices[0], "message"))
    except ValueError as exc:
        raise MalformedAnswer(str(exc)) from exc


def parse_chunk_tool_calls(chunk: Any) -> tuple[ToolCallDelta, ...]:
    """The tool-call pieces of one streamed chunk."""
    choices = _get(chunk, "choices")
    if not isinstance(choices, list) or not choices:
        return ()
    return parse_tool_call_deltas(_get(choices[0], "delta"))


def parse_embedding_vectors(response: Any, count: int) -> tuple[tuple[float, ...], ...]:
    """The vectors of litellm's ``EmbeddingResponse``, in input order."""
    items = _get(response, "data")
    if not isinstance(items, list) or len(items) != count:
        raise MalformedAnswer(f"expected {count} embeddings")
    vectors: list[tuple[float, ...]] = [()] * count
    for position, item in enumerate(items):
        vector = _get(item, "embedding")
        index = _get(item, "index")
        if not isinstance(vector, list):
            raise MalformedAnswer(f"data[{position}].embedding is not a list")
        slot = index if isinstance(index, int) and 0 <= index < count else position
        vectors[slot] = tuple(float(v) for v in vector)
    return tuple(vectors)


def response_headers(obj: Any) -> dict[str, str]:
    """The provider's HTTP response headers, where litellm keeps them on a response or stream."""
    headers = getattr(obj, "_response_headers", None)
    if isinstance(headers, Mapping) and headers:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    hidden = getattr(obj, "_hidden_params", None)
    if not isinstance(hidden, Mapping):
        return {}
    plain = hidden.get("headers")
    if isinstance(plain, Mapping) and plain:
        return {str(k).lower(): str(v) for k, v in plain.items()}
    prefixed = hidden.get("additional_headers")
    if isinstance(prefixed, Mapping):
        return {str(k).lower().removeprefix("llm_provider-"): str(v) for k, v in prefixed.items()}
    return {}


def server_ms(headers: Mapping[str, str]) -> float | None:
    """The provider's own processing time, when a response header reports it."""
    for name in SERVER_MS_HEADERS:
        try:
            value = float(headers[name])
        except (KeyError, ValueError):
            continue
        if value >= 0:
            return value
    return None

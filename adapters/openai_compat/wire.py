"""Pure mapping between our chat types and the OpenAI Chat Completions wire format, as spoken by
OpenAI-compatible servers (llama.cpp's server, vLLM, LM Studio, MLX's server, Ollama's /v1). No
I/O here; ``adapters.openai_compat.backend`` does that.

Replies are read as plain JSON, not through the ``openai`` SDK's response models, because these
servers differ in what they send and the SDK builds its models without validating them: a
missing field would surface as ``None`` far from where it went wrong. A reply that is not in
the OpenAI shape raises ``MalformedReply``, which the adapter turns into ``BackendBadResponse``.

What the servers do not all send, and what we do then:

* **Usage.** Servers that send none (llama-cpp-python's, in streams) get estimated usage
  (``Usage.estimated=True``): one completion token per content or reasoning chunk (servers
  stream about one token per chunk), or ``ceil(chars / 4)`` for a whole reply (its reasoning
  included), and, for the prompt, ``4 + ceil(chars / 4)`` tokens per message (OpenAI's rule
  of thumb of ~4 characters per token, plus the template's role markers).
* **Server time.** llama.cpp's server adds a ``timings`` object; ``server_ms`` is its
  ``prompt_ms + predicted_ms`` and its ``cache_n`` stands in for cached tokens when
  ``usage.prompt_tokens_details.cached_tokens`` is absent.
* **Reasoning.** A reasoning model's thinking comes apart from the content, as the message's
  ``reasoning_content`` (streamed: ``delta.reasoning_content``; llama.cpp's server, vLLM before
  0.11, LM Studio) or ``reasoning`` (vLLM since 0.11, Ollama's /v1); either is read, the first
  when both come. Its tokens are in ``completion_tokens``.
* **Which stop string matched.** vLLM adds ``stop_reason`` to a choice: the stop string that
  ended it (or a stop token's id). A string that is one of the request's ``stop`` becomes
  ``stop_sequence``; the other servers say only ``finish_reason: "stop"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters._openai_shape import (
    message_json,
    parse_tool_call_deltas,
    parse_tool_calls,
    tool_fields,
)
from adapters.chat import (
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Timings,
    ToolCallDelta,
    Usage,
    normalise_finish_reason,
)
from adapters.thinking import local_thinking

CHARS_PER_TOKEN = 4
# Where servers put a reasoning model's thinking, in the order read (see the module docstring).
REASONING_FIELDS = ("reasoning_content", "reasoning")
TOKENS_PER_MESSAGE = 4
# How much of an unreadable body or a server's error message goes into our error messages.
PREVIEW_CHARS = 200


class MalformedReply(ValueError):
    """A reply that is not in the OpenAI shape; the message says what is wrong with it."""


# --- pure mapping: request ------------------------------------------------------------------


def build_payload(model: str, request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a chat completion request, forwarding only what was set.

    ``top_k`` is not an OpenAI parameter but llama.cpp, vLLM and LM Studio read it at the top
    level (others ignore it). ``stream`` and ``stream_options`` are the caller's.
    """
    payload: dict[str, Any] = {
        "model": model,
        "messages": [message_json(m) for m in request.messages],
    }
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.stop:
        payload["stop"] = list(request.stop)
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.presence_penalty is not None:
        payload["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        payload["frequency_penalty"] = request.frequency_penalty
    if request.top_k is not None:
        payload["top_k"] = request.top_k
    if request.reasoning_effort is not None:  # as OpenAI defines it, for reasoning models
        payload["reasoning_effort"] = request.reasoning_effort
    payload.update(tool_fields(request))
    return payload


# --- pure mapping: replies ------------------------------------------------------------------


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _milliseconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def parse_usage(usage: object, timings: object = None) -> Usage | None:
    """``Usage`` from an OpenAI ``usage`` object, or ``None`` when the server sent none."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    if cached is None and isinstance(timings, Mapping):
        cached = _count(timings.get("cache_n"))  # llama.cpp's server
    return Usage(
        prompt_tokens=prompt or 0, completion_tokens=completion or 0, cached_tokens=cached or 0
    )


def parse_server_ms(timings: object) -> float | None:
    """Milliseconds llama.cpp's server says it spent (``prompt_ms + predicted_ms``)."""
    if not isinstance(timings, Mapping):
        return None
    parts = [_milliseconds(timings.get(key)) for key in ("prompt_ms", "predicted_ms")]
    present = [p for p in parts if p is not None]
    return sum(present) if present else None


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the ~4 characters per token rule of thumb."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_usage(request: ChatRequest, *, completion_tokens: int) -> Usage:
    """Usage for a server that reported none (see the module docstring for the rule)."""
    prompt = sum(TOKENS_PER_MESSAGE + estimate_tokens(m.content) for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion_tokens, estimated=True)


def _first_choice(data: object, what: str) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    if not isinstance(data, Mapping):
        raise MalformedReply(f"the {what} is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise MalformedReply(f"the {what} has no `choices` list")
    if not choices:
        return data, None
    choice = choices[0]
    if not isinstance(choice, Mapping):
        raise MalformedReply(f"choices[0] of the {what} is not an object")
    return data, choice


def _text(holder: object, field: str) -> str:
    if not isinstance(holder, Mapping):
        raise MalformedReply(f"choices[0].{field} is missing")
    content = holder.get("content")
    if content is None:  # a refusal or a tool call carries no text
        return ""
    if not isinstance(content, str):
        raise MalformedReply(f"choices[0].{field}.content is not text")
    return content


def parse_reasoning(holder: object, field: str) -> str:
    """The reasoning in a message or delta (``reasoning_content``, else ``reasoning``)."""
    if not isinstance(holder, Mapping):
        return ""
    for key in REASONING_FIELDS:
        value = holder.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise MalformedReply(f"choices[0].{field}.{key} is not text")
        if value:
            return value
    return ""


def parse_response(
    data: object,
    request: ChatRequest,
    *,
    backend: str,
    model: str,
    latency_ms: float,
    shows_thinking: bool = True,
) -> Completion:
    """A ``Completion`` from a non-streamed chat completion object; its reasoning becomes an
    unsigned thinking block when ``shows_thinking``.

    https://platform.openai.com/docs/api-reference/chat/object
    """
    body, choice = _first_choice(data, "reply")
    if choice is None:
        raise MalformedReply("the reply has an empty `choices` list")
    message = choice.get("message")
    text = _text(message, "message")
    reasoning = parse_reasoning(message, "message")
    try:
        tool_calls = parse_tool_calls(message)
    except ValueError as exc:
        raise MalformedReply(f"choices[0].{exc}") from exc
    finish = choice.get("finish_reason")
    timings = body.get("timings")
    usage = parse_usage(body.get("usage"), timings) or estimate_usage(
        request, completion_tokens=estimate_tokens(reasoning + text)
    )
    reported = body.get("model")
    finish_reason = normalise_finish_reason(finish if isinstance(finish, str) else None)
    return Completion(
        text=text,
        finish_reason=finish_reason,
        usage=usage,
        timings=Timings(latency_ms=latency_ms, server_ms=parse_server_ms(timings)),
        backend=backend,
        model=reported if isinstance(reported, str) and reported else model,
        tool_calls=tool_calls,
        logprobs=choice.get("logprobs"),
        stop_sequence=(
            matched_stop(choice.get("stop_reason"), request) if finish_reason == "stop" else None
        ),
        thinking=local_thinking(reasoning) if shows_thinking else (),
    )


def matched_stop(stop_reason: object, request: ChatRequest) -> str | None:
    """vLLM's ``stop_reason``, when it names one of the request's stop strings."""
    return stop_reason if isinstance(stop_reason, str) and stop_reason in request.stop else None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What one streamed chunk says. ``finish_reason`` is the server's own spelling."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    server_ms: float | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: Any = None
    stop_reason: object = None  # vLLM's: the stop string (or token id) that ended the choice
    reasoning: str = ""  # a piece of the reasoning, which comes before the content


def parse_chunk(data: object) -> StreamEvent:
    """One chat completion chunk object; a usage-only chunk has an empty ``choices`` list.

    https://platform.openai.com/docs/api-reference/chat-streaming/streaming
    """
    body, choice = _first_choice(data, "stream chunk")
    delta, finish, reasoning = "", None, ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: Any = None
    stop_reason: object = None
    if choice is not None:
        delta = _text(choice.get("delta"), "delta")
        reasoning = parse_reasoning(choice.get("delta"), "delta")
        tool_calls = parse_tool_call_deltas(choice.get("delta"))
        logprobs = choice.get("logprobs")
        raw_finish = choice.get("finish_reason")
        finish = raw_finish if isinstance(raw_finish, str) else None
        stop_reason = choice.get("stop_reason")
    timings = body.get("timings")
    return StreamEvent(
        delta=delta,
        finish_reason=finish,
        usage=parse_usage(body.get("usage"), timings),
        server_ms=parse_server_ms(timings),
        tool_calls=tool_calls,
        logprobs=logprobs,
        stop_reason=stop_reason,
        reasoning=reasoning,
    )


def parse_model_ids(data: object) -> list[str]:
    """Model ids from a list-models reply. https://platform.openai.com/docs/api-reference/models"""
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise MalformedReply("the models list has no `data` list")
    return [i["id"] for i in items if isinstance(i, Mapping) and isinstance(i.get("id"), str)]


def decode_json(body: bytes) -> object:
    """The JSON in a reply body; ``MalformedReply`` (with a preview) when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        preview = body[:PREVIEW_CHARS].decode("utf-8", "replace")
        raise MalformedReply(f"the reply is not JSON ({preview!r})") from exc


# --- embeddings -------------------------------------------------------------------------------


def build_embedding_payload(model: str, request: EmbeddingRequest) -> dict[str, Any]:
    """The body of ``POST /embeddings``, asking for plain float vectors."""
    payload: dict[str, Any] = {
        "model": model,
        "input": list(request.inputs),
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        payload["dimensions"] = request.dimensions
    if request.user is not None:
        payload["user"] = request.user
    return payload


def parse_embeddings(
    data: object, request: EmbeddingRequest
) -> tuple[tuple[tuple[float, ...], ...], Usage]:
    """Vectors (in input order, by ``index``) and usage from an embeddings list object.
    https://platform.openai.com/docs/api-reference/embeddings/object"""
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or len(items) != len(request.inputs):
        raise MalformedReply(
            f"the embeddings reply does not hold one vector per input ({len(request.inputs)})"
        )
    vectors: list[tuple[float, ...]] = [()] * len(items)
    for position, item in enumerate(items):
        vector = item.get("embedding") if isinstance(item, Mapping) else None
        index = item.get("index", position) if isinstance(item, Mapping) else position
        if not isinstance(vector, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in vector
        ):
            raise MalformedReply(f"data[{position}].embedding is not a list of numbers")
        if not isinstance(index, int) or not 0 <= index < len(items):
            raise MalformedReply(f"data[{position}].index is out of range")
        vectors[index] = tuple(float(v) for v in vector)
    usage = parse_usage(data.get("usage") if isinstance(data, Mapping) else None)
    if usage is None:
        prompt = sum(estimate_tokens(text) for text in request.inputs)
        usage = Usage(prompt_tokens=prompt, estimated=True)
    return tuple(vectors), usage

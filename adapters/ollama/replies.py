"""Pure mapping of Ollama's native replies: the ``/api/chat`` JSON (and its NDJSON stream
lines) and ``/api/embed`` JSON, in. No I/O here; the bodies going out are built in
``adapters.ollama.wire`` (https://github.com/ollama/ollama/blob/main/docs/api.md).

Ollama reports durations in nanoseconds
(https://github.com/ollama/ollama/blob/main/docs/api.md#durations); we speak milliseconds. A
thinking model's reasoning comes in ``message.thinking``, apart from ``content`` (whole; in a
stream, its pieces come in lines before the content's), and its tokens are in ``eval_count``
(https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-with-thinking). A reply
that is not the documented JSON raises ``MalformedReply``, and an ``{"error": ...}`` line in a
stream ``OllamaError`` (both from ``adapters.ollama.errors``, which maps them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters._openai_shape import plain
from adapters.chat import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    Timings,
    ToolCall,
    Usage,
    normalise_finish_reason,
)
from adapters.ollama.errors import MalformedReply, OllamaError
from adapters.thinking import ThinkingBlock

NS_PER_MS = 1_000_000

# Rough English average, used only when Ollama leaves a count out; such usage is marked estimated.
CHARS_PER_TOKEN = 4
# What a chat template adds around each message (role markers, separators), for the estimate.
TEMPLATE_TOKENS_PER_MESSAGE = 4


def decode(body: bytes | str) -> object:
    """The JSON in a reply body or stream line; ``MalformedReply`` when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedReply(f"not JSON: {exc}") from exc


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One ``/api/chat`` response object: a whole answer, or one NDJSON line of a stream (the
    last, ``done``, carries the counts and nanosecond durations). ``thinking``: a thinking
    model's reasoning (in a stream, a piece of it)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str = ""
    done: bool = False
    done_reason: str | None = None
    model: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None


def _tool_calls(raw: object) -> tuple[ToolCall, ...]:
    """Ollama's tool calls with OpenAI-style ids and arguments as JSON text (Ollama sends an
    object and no id); each call arrives whole, also in a stream."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedReply("message.tool_calls is not a list")
    calls: list[ToolCall] = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping):
            function = {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedReply(f"message.tool_calls[{i}] has no function name")
        arguments = function.get("arguments") or {}  # a function that takes none may omit them
        if not isinstance(arguments, Mapping):
            raise MalformedReply(f"message.tool_calls[{i}].function.arguments is not an object")
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        calls.append(ToolCall(call_id, name, json.dumps(plain(arguments))))
    return tuple(calls)


def parse_line(data: object) -> ChatLine:
    """A ``ChatLine`` from a decoded response object or stream line; an ``{"error": ...}``
    line raises ``OllamaError``."""
    if not isinstance(data, Mapping):
        raise MalformedReply("the reply is not a JSON object")
    error = data.get("error")
    if error is not None:
        raise OllamaError(str(error))
    done = data.get("done") is True
    message = data.get("message")
    if message is None and done:  # the documented final stream line elides it
        message = {}
    if not isinstance(message, Mapping):
        raise MalformedReply("the reply has no `message` object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedReply("message.content is not text")
    thinking = message.get("thinking")
    if thinking is not None and not isinstance(thinking, str):
        raise MalformedReply("message.thinking is not text")
    reason = data.get("done_reason")
    model = data.get("model")
    return ChatLine(
        text=content or "",
        tool_calls=_tool_calls(message.get("tool_calls")),
        thinking=thinking or "",
        done=done,
        done_reason=reason if isinstance(reason, str) and reason else None,
        model=model if isinstance(model, str) and model else None,
        prompt_eval_count=_count(data.get("prompt_eval_count")),
        eval_count=_count(data.get("eval_count")),
        total_duration=_count(data.get("total_duration")),
        load_duration=_count(data.get("load_duration")),
    )


def ns_to_ms(value: int | None) -> float | None:
    """Nanoseconds (Ollama's unit) to milliseconds; ``None`` stays ``None``."""
    return None if value is None else value / NS_PER_MS


def estimate_tokens(text: str) -> int:
    """A rough token count, for when Ollama does not report one."""
    return -(-len(text) // CHARS_PER_TOKEN)


def usage_from(line: ChatLine, messages: Sequence[Message], completion: str) -> Usage:
    """Ollama's counts, or an estimate (marked as such) for any count it left out.
    ``completion``: all the generated text, reasoning included (``eval_count`` counts it)."""
    prompt = line.prompt_eval_count
    generated = line.eval_count
    estimated = prompt is None or generated is None
    if prompt is None:
        prompt = sum(estimate_tokens(m.content) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
    if generated is None:
        generated = estimate_tokens(completion)
    return Usage(prompt_tokens=prompt, completion_tokens=generated, estimated=estimated)


def timings_from(line: ChatLine, latency_ms: float, ttft_ms: float | None) -> Timings:
    """Our wall times, with the server's ``total_duration`` and ``load_duration``."""
    return Timings(
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        server_ms=ns_to_ms(line.total_duration),
        load_ms=ns_to_ms(line.load_duration),
    )


def finish_reason_of(line: ChatLine, max_tokens: int | None) -> FinishReason:
    """``done_reason`` as an OpenAI finish reason. Servers older than 0.2 send none; then a
    reply of exactly ``max_tokens`` tokens is taken to have hit the limit."""
    hit_limit = (
        line.done_reason is None
        and max_tokens is not None
        and line.eval_count is not None
        and line.eval_count >= max_tokens
    )
    return normalise_finish_reason(line.done_reason, hit_limit=hit_limit)


def parse_response(
    line: ChatLine,
    request: ChatRequest,
    *,
    text: str,
    backend: str,
    model: str,
    latency_ms: float,
    ttft_ms: float | None,
    reasoning: str = "",
    tool_calls: tuple[ToolCall, ...] = (),
    thinking: tuple[ThinkingBlock, ...] = (),
) -> Completion:
    """A whole answer from the final (or only) response object; ``text`` is the full reply,
    ``thinking`` the reasoning shown with it. Ollama says ``done_reason: stop`` after tool
    calls too; OpenAI says ``tool_calls``. ``reasoning``: all the reasoning generated, shown
    or not, for the estimate when Ollama leaves ``eval_count`` out."""
    finish = finish_reason_of(line, request.max_tokens)
    return Completion(
        text=text,
        finish_reason="tool_calls" if tool_calls and finish == "stop" else finish,
        usage=usage_from(line, request.messages, reasoning + text),
        timings=timings_from(line, latency_ms, ttft_ms),
        backend=backend,
        model=line.model or model,
        tool_calls=tool_calls,
        thinking=thinking,
    )


@dataclass(frozen=True, slots=True)
class EmbedReply:
    """What ``/api/embed`` answered."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None


def parse_embeddings(data: object) -> EmbedReply:
    """The vectors (in input order), count and durations of an ``/api/embed`` reply."""
    items = data.get("embeddings") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(items, list | None):
        raise MalformedReply("the embeddings reply has no `embeddings` list")
    vectors: list[tuple[float, ...]] = []
    for i, vector in enumerate(items or []):
        if not isinstance(vector, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in vector
        ):
            raise MalformedReply(f"embeddings[{i}] is not a list of numbers")
        vectors.append(tuple(float(v) for v in vector))
    return EmbedReply(
        vectors=tuple(vectors),
        prompt_eval_count=_count(data.get("prompt_eval_count")),
        total_duration=_count(data.get("total_duration")),
        load_duration=_count(data.get("load_duration")),
    )

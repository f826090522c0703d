"""Pure mapping between our chat types and Ollama's native API: the JSON bodies of
``/api/chat`` and ``/api/embed`` out, the JSON replies (and NDJSON stream lines) in. No I/O
here; ``adapters.ollama.backend`` posts the bodies with httpx, exactly as built
(https://github.com/ollama/ollama/blob/main/docs/api.md). ``/api/tags`` and ``/api/show`` are
read in ``adapters.ollama.models``.

Ollama reports durations in nanoseconds
(https://github.com/ollama/ollama/blob/main/docs/api.md#durations); we speak milliseconds. A
reply that is not the documented JSON raises ``MalformedReply``, and an ``{"error": ...}``
line in a stream ``OllamaError`` (both from ``adapters.ollama.errors``, which maps them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters._openai_shape import plain, tools_json
from adapters.chat import (
    ChatRequest,
    Completion,
    EmbeddingRequest,
    FinishReason,
    Message,
    Timings,
    ToolCall,
    Usage,
    normalise_finish_reason,
)
from adapters.config import OllamaConfig
from adapters.ollama.errors import MalformedReply, OllamaError, UnsupportedInput

NS_PER_MS = 1_000_000

# Rough English average, used only when Ollama leaves a count out; such usage is marked estimated.
CHARS_PER_TOKEN = 4
# What a chat template adds around each message (role markers, separators), for the estimate.
TEMPLATE_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class ChatCall:
    """The fields of one ``/api/chat`` call, apart from ``stream``."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any] | None
    keep_alive: str | float
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | None = None  # a thinking model: think first (true) or answer at once (false)

    def body(self, *, stream: bool) -> dict[str, Any]:
        """The JSON body of ``POST /api/chat``, sent as it is: everything the app sent must
        arrive (nested tool-parameter schemas, base64 images), which a typed client that drops
        what its models lack would not guarantee."""
        out: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "stream": stream,
            "keep_alive": self.keep_alive,
        }
        if self.options is not None:
            out["options"] = self.options
        if self.tools:
            out["tools"] = self.tools
        if self.format is not None:
            out["format"] = self.format
        if self.think is not None:
            out["think"] = self.think
        return out


# --- requests --------------------------------------------------------------------------------


def build_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Ollama's message objects (https://github.com/ollama/ollama/blob/main/docs/api.md#chat).

    An assistant turn's tool calls carry their arguments as a JSON *object*; a tool result
    names its function in ``tool_name`` (found through ``tool_call_id``, or the message's
    ``name``); images go as base64 in ``images`` (only ``data:`` URLs: Ollama cannot fetch
    one, and the gateway does not fetch URLs for it). Ollama has no field for the name of
    other speakers, so it is dropped.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                names[call.id] = call.name
                calls.append({"function": {"name": call.name, "arguments": _arguments(call)}})
            item["tool_calls"] = calls
        if message.role == "tool":
            tool_name = message.name or names.get(message.tool_call_id or "")
            if tool_name:
                item["tool_name"] = tool_name
        if message.images:
            item["images"] = [_base64_image(image.url, index) for image in message.images]
        out.append(item)
    return out


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        raise UnsupportedInput(
            f"the arguments of tool call {call.id!r} are not JSON; Ollama needs a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise UnsupportedInput(f"the arguments of tool call {call.id!r} are not a JSON object")
    return value


def _base64_image(url: str, index: int) -> str:
    head, comma, data = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise UnsupportedInput(
            f"messages[{index}]: Ollama takes images inline only: send them as "
            f"data:image/...;base64 URLs, not links"
        )
    return data


def build_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """``tools`` in OpenAI's shape, which Ollama takes as it is. Ollama has no ``tool_choice``:
    ``none`` leaves the tools out; ``required`` and a named function cannot be enforced."""
    if not request.tools or (request.tool_choice and request.tool_choice.mode == "none"):
        return None
    return tools_json(request)


def build_format(request: ChatRequest) -> str | dict[str, Any] | None:
    """``format``: ``"json"`` for JSON mode, the schema itself for a JSON schema."""
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt.type == "json_object":
        return "json"
    schema: dict[str, Any] = plain(fmt.schema or {})
    return schema


def build_options(request: ChatRequest | None, num_ctx: int | None) -> dict[str, Any] | None:
    """The ``options`` object: only what the request set, plus ``num_ctx`` from the config.

    ``num_ctx`` goes on every call, prewarm included: Ollama reloads a model whose context size
    changes, so a prewarm without it would load the model twice.
    """
    options: dict[str, Any] = {}
    if request is not None:
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.top_k is not None:
            options["top_k"] = request.top_k
        if request.stop:
            options["stop"] = list(request.stop)
        if request.seed is not None:
            options["seed"] = request.seed
        if request.presence_penalty is not None:
            options["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            options["frequency_penalty"] = request.frequency_penalty
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    return options or None


def build_call(request: ChatRequest, config: OllamaConfig, *, thinks: bool = False) -> ChatCall:
    """The ``/api/chat`` call for ``request``. ``thinks``: the model can think (``/api/show``
    lists ``thinking``), so a request's extended thinking becomes ``think`` (on: enabled or
    adaptive, whose budget Ollama has no knob for; off: disabled). To a model that cannot,
    Ollama answers any ``think`` with a 400: it is left out, and the model answers as it does."""
    thinking = request.thinking
    return ChatCall(
        model=config.model,
        messages=build_messages(request.messages),
        options=build_options(request, config.num_ctx),
        keep_alive=config.keep_alive,
        tools=build_tools(request),
        format=build_format(request),
        think=thinking.on if thinking is not None and thinks else None,
    )


def build_prewarm_call(config: OllamaConfig) -> ChatCall:
    """Ollama's documented way to load a model: a chat with no messages
    (https://github.com/ollama/ollama/blob/main/docs/api.md#load-a-model-1)."""
    return ChatCall(
        model=config.model,
        messages=[],
        options=build_options(None, config.num_ctx),
        keep_alive=config.keep_alive,
    )


def build_embed_body(request: EmbeddingRequest, config: OllamaConfig) -> dict[str, Any]:
    """The JSON body of ``POST /api/embed``
    (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings)."""
    body: dict[str, Any] = {
        "model": config.model,
        "input": list(request.inputs),
        "keep_alive": config.keep_alive,
    }
    options = build_options(None, config.num_ctx)
    if options is not None:
        body["options"] = options
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


# --- replies --------------------------------------------------------------------------------


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
    last, ``done``, carries the counts and nanosecond durations)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
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
    reason = data.get("done_reason")
    model = data.get("model")
    return ChatLine(
        text=content or "",
        tool_calls=_tool_calls(message.get("tool_calls")),
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
    """Ollama's counts, or an estimate (marked as such) for any count it left out."""
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
    tool_calls: tuple[ToolCall, ...] = (),
) -> Completion:
    """A whole answer from the final (or only) response object; ``text`` is the full reply.
    Ollama says ``done_reason: stop`` after tool calls too; OpenAI says ``tool_calls``."""
    finish = finish_reason_of(line, request.max_tokens)
    return Completion(
        text=text,
        finish_reason="tool_calls" if tool_calls and finish == "stop" else finish,
        usage=usage_from(line, request.messages, text),
        timings=timings_from(line, latency_ms, ttft_ms),
        backend=backend,
        model=line.model or model,
        tool_calls=tool_calls,
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

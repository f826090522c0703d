"""Pure mapping from our chat types to Ollama's native API: the JSON bodies of ``/api/chat``
and ``/api/embed``. No I/O here; ``adapters.ollama.backend`` posts the bodies with httpx,
exactly as built (https://github.com/ollama/ollama/blob/main/docs/api.md). The replies are read
in ``adapters.ollama.replies``, ``/api/tags`` and ``/api/show`` in ``adapters.ollama.models``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters._openai_shape import plain, tools_json
from adapters.chat import ChatRequest, EmbeddingRequest, Message, ToolCall
from adapters.config import OllamaConfig
from adapters.ollama.errors import UnsupportedInput


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

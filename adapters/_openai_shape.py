"""Our request fields in OpenAI's Chat Completions shape, and tool calls read back from it.

Shared by the OpenAI-compatible adapter (which sends JSON) and the remote adapter (litellm takes
the same shape as keyword arguments and translates it for Anthropic, Gemini, ...). Pure; objects
are read by key or attribute so litellm's response objects and plain JSON both work.
https://platform.openai.com/docs/api-reference/chat/create
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.chat import ChatRequest, Message, ToolCall, ToolCallDelta


def message_json(message: Message) -> dict[str, Any]:
    """One message: text, or text and ``image_url`` parts; assistant ``tool_calls``; a tool
    result's ``tool_call_id``."""
    content: Any = message.content
    if message.images:
        parts: list[dict[str, Any]] = []
        if message.content:
            parts.append({"type": "text", "text": message.content})
        for image in message.images:
            url: dict[str, Any] = {"url": image.url}
            if image.detail is not None:
                url["detail"] = image.detail
            parts.append({"type": "image_url", "image_url": url})
        content = parts
    elif message.tool_calls and not message.content:
        content = None
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tools_json(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": plain(tool.parameters)}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.strict is not None:
            function["strict"] = tool.strict
        out.append({"type": "function", "function": function})
    return out


def tool_fields(request: ChatRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``, ``logprobs``,
    ``top_logprobs`` and ``user``, as far as the request set them."""
    out: dict[str, Any] = {}
    if request.tools:
        out["tools"] = tools_json(request)
        choice = request.tool_choice
        if choice is not None:
            out["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.mode == "function"
                else choice.mode
            )
        if request.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None:
        if fmt.type == "json_object":
            out["response_format"] = {"type": "json_object"}
        else:
            spec: dict[str, Any] = {"name": fmt.name or "response", "schema": plain(fmt.schema)}
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            out["response_format"] = {"type": "json_schema", "json_schema": spec}
    if request.logprobs:
        out["logprobs"] = True
        if request.top_logprobs is not None:
            out["top_logprobs"] = request.top_logprobs
    if request.user is not None:
        out["user"] = request.user
    return out


def plain(value: Any) -> Any:
    """A JSON-ready copy (read-only mappings become dicts)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def parse_tool_calls(message: Any) -> tuple[ToolCall, ...]:
    """``message.tool_calls`` of a whole answer; ``ValueError`` when one is malformed."""
    raw = _get(message, "tool_calls")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("message.tool_calls is not a list")
    calls: list[ToolCall] = []
    for i, item in enumerate(raw):
        function = _get(item, "function")
        name = _get(function, "name")
        arguments = _get(function, "arguments")
        call_id = _get(item, "id")
        if not isinstance(name, str) or not name:
            raise ValueError(f"message.tool_calls[{i}] has no function name")
        if not isinstance(arguments, str):
            raise ValueError(f"message.tool_calls[{i}].function.arguments is not text")
        calls.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else f"call_{i}",
                name=name,
                arguments=arguments,
            )
        )
    return tuple(calls)


def parse_tool_call_deltas(delta: Any) -> tuple[ToolCallDelta, ...]:
    """``delta.tool_calls`` of one streamed chunk (pieces; see ``ToolCallDelta``)."""
    raw = _get(delta, "tool_calls")
    if not isinstance(raw, list):
        return ()
    pieces: list[ToolCallDelta] = []
    for position, item in enumerate(raw):
        index = _get(item, "index")
        function = _get(item, "function")
        name = _get(function, "name")
        arguments = _get(function, "arguments")
        call_id = _get(item, "id")
        pieces.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=call_id if isinstance(call_id, str) and call_id else None,
                name=name if isinstance(name, str) and name else None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(pieces)

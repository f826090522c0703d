"""Answers in Anthropic's Messages shape: the whole message, the streamed event sequence
(``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``,
``message_stop``) and Anthropic's error body. An answer's extended-thinking blocks come first,
as Anthropic sends them: ``thinking`` (streamed as ``thinking_delta`` then ``signature_delta``)
and ``redacted_thinking``; a local model's come unsigned (empty ``signature``, no
``signature_delta``), and only when the request turned thinking on (``shows_thinking``): a
local model may think unasked, and a client that did not ask expects no such blocks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.base import (
    Completion,
    FinishReason,
    ThinkingBlock,
    ToolCall,
    ToolCallDelta,
    Usage,
)

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}
# HTTP status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",  # the backend gave no answer in time
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def message_id(request_id: str) -> str:
    return f"msg_{request_id.replace('-', '')}"


def whole(completion: Completion, msg_id: str, model: str, *, shows_thinking: bool = True) -> bytes:
    """A whole answer as Anthropic's ``message`` object."""
    thinking = completion.thinking if shows_thinking else ()
    content: list[dict[str, Any]] = [block.wire() for block in thinking]
    if completion.text or not completion.tool_calls:
        content.append({"type": "text", "text": completion.text})
    content.extend(_tool_use(call) for call in completion.tool_calls)
    return orjson.dumps(
        {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            **_stop(completion.finish_reason, completion.stop_sequence),
            "usage": _usage(completion.usage),
        }
    )


def _stop(reason: FinishReason, stop_sequence: str | None) -> dict[str, str | None]:
    """``stop_reason`` and ``stop_sequence``: ``stop_sequence`` when the backend said which of
    the request's ``stop_sequences`` ended the answer; ``end_turn`` when it stopped and did not
    say (most remote and local servers report only that they stopped)."""
    if reason == "stop" and stop_sequence is not None:
        return {"stop_reason": "stop_sequence", "stop_sequence": stop_sequence}
    return {"stop_reason": STOP_REASONS[reason], "stop_sequence": None}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments) if call.arguments else {}
        orjson.dumps(arguments)  # writable in the answer (orjson stops at 64-bit integers)
    except (ValueError, TypeError):
        arguments = {"_raw": call.arguments}  # a backend's arguments as it sent them
    if not isinstance(arguments, dict):
        arguments = {"_value": arguments}
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def event(kind: str, payload: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": kind, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(slots=True)
class EventStream:
    """Turns the pipeline's chunks into Anthropic's content blocks: thinking in a ``thinking``
    block (``thinking_delta``, then the ``signature_delta`` that ends it), a redacted block
    whole, text in a text block, each tool call in a ``tool_use`` block whose arguments arrive
    as ``input_json_delta``.

    ``usage`` is what is known when the stream starts: for a stream, the gateway's count of the
    prompt (the backend's own count, cache reads included, comes with the end); for an answer
    made whole, its usage. ``message_delta`` carries the final counts, input included: its usage
    is cumulative, and the SDKs take each field it has over ``message_start``'s."""

    msg_id: str
    model: str
    usage: Usage
    shows_thinking: bool = True  # False: the request did not turn thinking on
    _open: int | None = None  # index of the block being written
    # "text", "thinking:<n>", "redacted:<n>" or the tool call's index, as "tool:<n>"
    _kind: str | None = None
    _blocks: int = 0
    _tools: dict[int, int] = field(default_factory=dict)  # tool call index → block index

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**_usage(self.usage), "output_tokens": 0},
        }
        return event("message_start", {"message": message}) + event("ping", {})

    def text(self, delta: str) -> bytes:
        out = self._switch("text", {"type": "text", "text": ""})
        return out + event(
            "content_block_delta",
            {"index": self._open, "delta": {"type": "text_delta", "text": delta}},
        )

    def thinking(self, pieces: Iterable[ThinkingBlock]) -> bytes:
        out = b""
        if not self.shows_thinking:
            return out
        for piece in pieces:
            if piece.type == "redacted_thinking":
                out += self._switch(f"redacted:{self._blocks}", piece.wire()) + self._close()
                continue
            if self._kind is None or not self._kind.startswith("thinking:"):
                block = {"type": "thinking", "thinking": "", "signature": ""}
                out += self._switch(f"thinking:{self._blocks}", block)
            if piece.thinking:
                delta = {"type": "thinking_delta", "thinking": piece.thinking}
                out += event("content_block_delta", {"index": self._open, "delta": delta})
            if piece.signature:
                delta = {"type": "signature_delta", "signature": piece.signature}
                out += event("content_block_delta", {"index": self._open, "delta": delta})
                out += self._close()  # the signature ends the block
        return out

    def tool_calls(self, deltas: Iterable[ToolCallDelta]) -> bytes:
        out = b""
        for piece in deltas:
            kind = f"tool:{piece.index}"
            if piece.index not in self._tools:
                block = {
                    "type": "tool_use",
                    "id": piece.id or "",
                    "name": piece.name or "",
                    "input": {},
                }
                out += self._switch(kind, block)
                self._tools[piece.index] = self._blocks - 1
            elif self._kind != kind:
                continue  # a late piece of an earlier call: Anthropic's blocks do not interleave
            if piece.arguments:
                out += event(
                    "content_block_delta",
                    {
                        "index": self._open,
                        "delta": {"type": "input_json_delta", "partial_json": piece.arguments},
                    },
                )
        return out

    def end(self, reason: FinishReason, usage: Usage, stop_sequence: str | None) -> bytes:
        out = self._close()
        if self._blocks == 0:  # an empty answer still has its (empty) text block
            out += self._switch("text", {"type": "text", "text": ""}) + self._close()
        out += event(
            "message_delta",
            {
                "delta": _stop(reason, stop_sequence),
                "usage": _usage(usage),
            },
        )
        return out + event("message_stop", {})

    def error(self, message: str) -> bytes:
        """The backend failed mid-stream (a 502's kind of error)."""
        return error_event(502, message)

    def shutting_down(self, message: str) -> bytes:
        """The gateway ends the stream as it shuts down (a 503's kind: overloaded_error)."""
        return error_event(503, message)

    def _switch(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._kind == kind:
            return b""
        out = self._close()
        self._open, self._kind = self._blocks, kind
        self._blocks += 1
        return out + event("content_block_start", {"index": self._open, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = event("content_block_stop", {"index": self._open})
        self._open = self._kind = None
        return out


def error_event(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    return event("error", {"error": {"type": kind, "message": message}})

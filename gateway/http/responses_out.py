"""Answers in OpenAI's Responses shape: the ``response`` object (message and function-call
output items) and its typed event stream (``response.created`` … ``response.completed``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.base import Completion, FinishReason, ThinkingBlock, ToolCall, ToolCallDelta, Usage

INCOMPLETE: dict[FinishReason, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def item_status(at: int, items: int, finish: FinishReason | None) -> str:
    """An output item's status once the answer is over: the last item of an answer cut short
    (``max_output_tokens``, a content filter) is ``incomplete``, as the response is."""
    cut = finish is not None and finish in INCOMPLETE
    return "incomplete" if cut and at == items - 1 else "completed"


def response_id(request_id: str) -> str:
    return f"resp_{request_id.replace('-', '')}"


def _usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call(call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call.id}",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


@dataclass(slots=True)
class Envelope:
    """What every ``response`` object of one request repeats."""

    resp_id: str
    model: str
    # What the response repeats of the request (``responses_in.echoed``).
    echo: Mapping[str, Any] = field(default_factory=dict)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        output: list[dict[str, Any]],
        *,
        status: str,
        usage: Usage | None = None,
        finish: FinishReason | None = None,
    ) -> dict[str, Any]:
        reason = INCOMPLETE.get(finish) if finish is not None else None
        status = "incomplete" if reason else status
        return {
            "id": self.resp_id,
            "object": "response",
            "created_at": self.created_at,
            # OpenAI's: when the response completed, only on a ``completed`` one.
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": {"reason": reason} if reason else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            **self.echo,
            "store": False,
            "usage": _usage(usage),
        }


def whole(completion: Completion, envelope: Envelope) -> bytes:
    output: list[dict[str, Any]] = []
    if completion.text or not completion.tool_calls:
        output.append(_message(f"msg_{envelope.resp_id[5:]}", completion.text, "completed"))
    output.extend(_call(call, "completed") for call in completion.tool_calls)
    for at, item in enumerate(output):
        item["status"] = item_status(at, len(output), completion.finish_reason)
    body = envelope.response(
        output, status="completed", usage=completion.usage, finish=completion.finish_reason
    )
    return orjson.dumps(body)


@dataclass(slots=True)
class EventStream:
    """The pipeline's chunks as Responses events: text in one message item, each tool call in a
    function-call item whose arguments arrive as ``function_call_arguments.delta``."""

    envelope: Envelope
    _seq: int = 0
    _output: list[dict[str, Any]] = field(default_factory=list)
    _text: list[str] = field(default_factory=list)
    _text_at: int | None = None  # the message item's output index
    _calls: dict[int, int] = field(default_factory=dict)  # tool call index → output index

    def start(self) -> bytes:
        shell = self.envelope.response([], status="in_progress")
        return self._event("response.created", response=shell) + self._event(
            "response.in_progress", response=shell
        )

    def text(self, delta: str) -> bytes:
        out = b""
        if self._text_at is None:
            self._text_at = len(self._output)
            item = _message(self._message_id, "", "in_progress")
            item["content"] = []
            self._output.append(item)
            out += self._event("response.output_item.added", output_index=self._text_at, item=item)
            out += self._event(
                "response.content_part.added",
                item_id=self._message_id,
                output_index=self._text_at,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        self._text.append(delta)
        return out + self._event(
            "response.output_text.delta",
            item_id=self._message_id,
            output_index=self._text_at,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def thinking(self, pieces: Iterable[ThinkingBlock]) -> bytes:
        """Anthropic's thinking has no place in this API's answers (README: Extended
        thinking): left out, as in the whole answer."""
        return b""

    def tool_calls(self, deltas: Iterable[ToolCallDelta]) -> bytes:
        out = b""
        for piece in deltas:
            at = self._calls.get(piece.index)
            if at is None:
                at = self._calls[piece.index] = len(self._output)
                call = ToolCall(piece.id or f"call_{piece.index}", piece.name or "", "")
                item = _call(call, "in_progress")
                self._output.append(item)
                out += self._event("response.output_item.added", output_index=at, item=item)
            item = self._output[at]
            if piece.arguments:
                item["arguments"] += piece.arguments
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=at,
                    delta=piece.arguments,
                )
        return out

    def end(self, reason: FinishReason, usage: Usage, stop_sequence: str | None) -> bytes:
        # ``stop_sequence``: Responses has no field for it.
        out = b""
        if self._text_at is None and not self._calls:
            out += self.text("")  # an empty answer is still a message
        for at, item in enumerate(self._output):
            if item["type"] == "message":
                text = "".join(self._text)
                part = {"type": "output_text", "text": text, "annotations": []}
                out += self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=at,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
                out += self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=at,
                    content_index=0,
                    part=part,
                )
                item["content"] = [part]
            else:
                out += self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=at,
                    arguments=item["arguments"],
                )
            item["status"] = item_status(at, len(self._output), reason)
            out += self._event("response.output_item.done", output_index=at, item=item)
        final = self.envelope.response(self._output, status="completed", usage=usage, finish=reason)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=final)

    def error(self, message: str) -> bytes:
        return self._event("error", code="stream_interrupted", message=message, param=None)

    def shutting_down(self, message: str) -> bytes:
        """The gateway ends the stream as it shuts down."""
        return self._event("error", code="server_shutting_down", message=message, param=None)

    @property
    def _message_id(self) -> str:
        return f"msg_{self.envelope.resp_id[5:]}"

    def _event(self, kind: str, **payload: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self._seq, **payload})
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

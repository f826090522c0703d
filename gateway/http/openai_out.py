"""OpenAI-shaped response bodies and stream events, for ``/v1/chat/completions`` and
``/v1/completions``. Pure functions of their inputs; serialised with orjson."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from adapters.base import Completion, Embeddings, FinishReason, ToolCall, ToolCallDelta, Usage

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """How one endpoint spells its answers."""

    kind: Kind
    id: str
    created: int
    model: str

    @property
    def _object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def whole(self, completion: Completion, more: tuple[Completion, ...] = ()) -> bytes:
        """The whole answer; ``more`` are the extra choices of a request with ``n > 1``
        (``completion.usage`` counts them all)."""
        choices = [self._choice(i, c) for i, c in enumerate((completion, *more))]
        return orjson.dumps(
            {
                "id": self.id,
                "object": self._object,
                "created": self.created,
                "model": self.model,
                "choices": choices,
                "usage": usage_json(completion.usage),
                "system_fingerprint": None,
            }
        )

    def _choice(self, index: int, completion: Completion) -> dict[str, Any]:
        if self.kind != "chat":
            return {
                "index": index,
                "text": completion.text,
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        message: dict[str, Any] = {
            "role": "assistant",
            "content": completion.text or (None if completion.tool_calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if completion.tool_calls:
            message["tool_calls"] = [tool_call_json(c) for c in completion.tool_calls]
        if completion.reasoning:
            # Anthropic's thinking, as litellm and DeepSeek-style clients read it (its
            # signature stays out: this API has no way to send a block back).
            message["reasoning_content"] = completion.reasoning
        return {
            "index": index,
            "message": message,
            "logprobs": completion.logprobs,
            "finish_reason": completion.finish_reason,
        }

    def _event(self, choices: list[dict[str, Any]], usage: Any, with_usage: bool) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": self._chunk_object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if with_usage:
            payload["usage"] = usage
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def first(self, with_usage: bool, choice: int = 0) -> bytes:
        """The opening event (OpenAI sends the assistant role first, with empty content)."""
        if self.kind != "chat":
            return b""
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self._event(
            [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": None}],
            None,
            with_usage,
        )

    def delta(self, text: str, with_usage: bool, logprobs: Any = None, choice: int = 0) -> bytes:
        item: dict[str, Any] = (
            {"index": choice, "delta": {"content": text}, "logprobs": logprobs}
            if self.kind == "chat"
            else {"index": choice, "text": text, "logprobs": None}
        )
        item["finish_reason"] = None
        return self._event([item], None, with_usage)

    def reasoning(self, text: str, with_usage: bool, choice: int = 0) -> bytes:
        """A piece of the answer's thinking, as ``delta.reasoning_content`` (chat only)."""
        if self.kind != "chat":
            return b""
        item = {
            "index": choice,
            "delta": {"reasoning_content": text},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._event([item], None, with_usage)

    def tool_calls(
        self, deltas: tuple[ToolCallDelta, ...], with_usage: bool, choice: int = 0
    ) -> bytes:
        """Pieces of tool calls, as OpenAI streams them (id, type and name on the first)."""
        calls: list[dict[str, Any]] = []
        for d in deltas:
            item: dict[str, Any] = {"index": d.index}
            function: dict[str, Any] = {"arguments": d.arguments}
            if d.id is not None:
                item["id"] = d.id
                item["type"] = "function"
            if d.name is not None:
                function["name"] = d.name
            item["function"] = function
            calls.append(item)
        item = {
            "index": choice,
            "delta": {"tool_calls": calls},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._event([item], None, with_usage)

    def finish(self, reason: FinishReason, with_usage: bool, choice: int = 0) -> bytes:
        item: dict[str, Any] = (
            {"index": choice, "delta": {}, "logprobs": None, "finish_reason": reason}
            if self.kind == "chat"
            else {"index": choice, "text": "", "logprobs": None, "finish_reason": reason}
        )
        return self._event([item], None, with_usage)

    def usage(self, usage: Usage) -> bytes:
        """The extra event ``stream_options.include_usage`` asks for: no choices, usage set."""
        return self._event([], usage_json(usage), True)


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def error_event(message: str, type_: str, code: str | None = None) -> bytes:
    """An error after the stream started; the openai SDK raises it as an APIError."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def embeddings_json(embeddings: Embeddings, model: str, encoding: str | None) -> bytes:
    """https://platform.openai.com/docs/api-reference/embeddings/object; ``base64`` packs each
    vector as little-endian float32 (what the openai SDK asks for and decodes by default)."""
    data = []
    for index, vector in enumerate(embeddings.vectors):
        value: Any = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            if encoding == "base64"
            else list(vector)
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = embeddings.usage.prompt_tokens
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )

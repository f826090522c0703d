"""Prompt tokens a request carries besides its messages' text: tool definitions, the tool calls
in its history, and images. The context-window check adds them to the text's count, so a long
tool list or a few images cannot push a request past a backend's window unnoticed.

Tool definitions and calls are counted as the JSON the backend receives (providers render them
into the prompt in their own templates, of about that size). An image is counted as OpenAI
prices a high-detail 1024×1024 image — 85 base tokens + 4 tiles × 170 = 765 — or 85 at
``detail: low``; vision models of other families use a similar order of magnitude.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adapters.base import ChatRequest
from gateway.scoring.tokens import count_fast

IMAGE_TOKENS_HIGH = 85 + 4 * 170
IMAGE_TOKENS_LOW = 85


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def extra_prompt_tokens(request: ChatRequest) -> int:
    """Tokens of ``request``'s tools, tool calls and images (0 for a plain-text request)."""
    total = 0
    for tool in request.tools:
        schema = {
            "name": tool.name,
            "description": tool.description,
            "parameters": _plain(tool.parameters),
        }
        total += count_fast(json.dumps(schema, separators=(",", ":")))
    for message in request.messages:
        for call in message.tool_calls:
            total += count_fast(call.name) + count_fast(call.arguments)
        for image in message.images:
            total += IMAGE_TOKENS_LOW if image.detail == "low" else IMAGE_TOKENS_HIGH
    return total

"""What a request needs from a backend, and which backends have it. Pure functions.

The router keeps only candidates that can serve the request (tools, JSON output, images,
logprobs, a context window that holds prompt + max_tokens, an output limit at least max_tokens)
before it dispatches; the ledger records the needs so reports can break savings down by them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adapters.base import ChatRequest
from adapters.capabilities import Capabilities

CapabilityLookup = Callable[[str], Capabilities]

# The request parameter that asks for each capability, for the 400's ``param``.
PARAM_OF = {
    "tools": "tools",
    "parallel_tool_calls": "parallel_tool_calls",
    "tool_choice": "tool_choice",
    "json_mode": "response_format",
    "json_schema": "response_format",
    "vision": "messages",
    "logprobs": "logprobs",
    "streaming": "stream",
    "context_window": "messages",
    "max_output_tokens": "max_tokens",
    "embeddings": "model",
}


@dataclass(frozen=True, slots=True)
class Needs:
    """The capabilities one request needs (booleans; sizes are checked separately)."""

    tools: bool = False
    parallel_tool_calls: bool = False
    tool_choice: bool = False  # "required" or a named function: the backend must enforce it
    json_mode: bool = False
    json_schema: bool = False
    vision: bool = False
    logprobs: bool = False
    streaming: bool = False
    embeddings: bool = False

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in _FLAGS if getattr(self, name))

    def labels(self) -> tuple[str, ...]:
        """What the ledger records (streaming is a transport detail, not a need)."""
        return tuple(name for name in self.names() if name != "streaming")


_FLAGS = (
    "tools",
    "parallel_tool_calls",
    "tool_choice",
    "json_mode",
    "json_schema",
    "vision",
    "logprobs",
    "streaming",
    "embeddings",
)


def needs_of(request: ChatRequest, *, stream: bool = False) -> Needs:
    """What ``request`` needs. A conversation that already holds tool calls or results needs
    a tool-capable backend even without ``tools``: others cannot read those turns."""
    history = any(m.tool_calls or m.role == "tool" for m in request.messages)
    wants_tools = bool(request.tools) and (
        request.tool_choice is None or request.tool_choice.mode != "none"
    )
    tools = wants_tools or history
    fmt = request.response_format
    return Needs(
        tools=tools,
        parallel_tool_calls=wants_tools and request.parallel_tool_calls is True,
        tool_choice=wants_tools
        and request.tool_choice is not None
        and request.tool_choice.mode in ("required", "function"),
        json_mode=fmt is not None and fmt.type == "json_object",
        json_schema=fmt is not None and fmt.type == "json_schema",
        vision=any(m.images for m in request.messages),
        logprobs=request.logprobs,
        streaming=stream,
    )


def missing(capabilities: Capabilities, needs: Needs) -> list[str]:
    """The needed capabilities this backend lacks (empty: it can serve the request)."""
    lacking = [name for name in needs.names() if not getattr(capabilities, name)]
    if not capabilities.chat and not needs.embeddings:
        lacking.insert(0, "chat")
    return lacking

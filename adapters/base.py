"""The contract every backend shares.

Two layers:

* The *teaching contract*, kept exactly as it was: ``BackendInfo``, ``InferenceResult`` and the
  blocking ``Backend.complete(prompt, ...)`` that returns only the generated text.
* The *server contract* the gateway types against: ``acomplete(ChatRequest) -> Completion``,
  ``astream(ChatRequest) -> AsyncIterator[Chunk]``, ``prewarm()``, ``health()`` and ``aclose()``,
  plus what a backend is: ``name``, ``model_id``, ``context_window`` and ``capabilities``.

Every adapter implements both, so one object serves the CLI, the benchmark and the gateway. The
blocking ``complete()`` is written once, in ``BlockingComplete``, over ``acomplete()``. The chat
values (``ChatRequest``, ``Completion``, ``Chunk``, ...) live in ``adapters.chat`` and are
re-exported here, so ``from adapters.base import ChatRequest`` keeps working.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from adapters._blocking import run_blocking
from adapters.chat import (
    ROLES,
    ChatRequest,
    Chunk,
    Completion,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    Thinking,
    Timings,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    collect,
    merge_tool_calls,
    normalise_finish_reason,
)
from adapters.thinking import ThinkingBlock, local_thinking, merge_thinking, shows_local_thinking

if TYPE_CHECKING:
    from adapters.capabilities import Capabilities

__all__ = [
    "ROLES",
    "Backend",
    "BackendInfo",
    "BlockingComplete",
    "ChatRequest",
    "Chunk",
    "Completion",
    "Embedder",
    "EmbeddingRequest",
    "Embeddings",
    "FinishReason",
    "Health",
    "ImagePart",
    "InferenceResult",
    "Message",
    "ResponseFormat",
    "Role",
    "Thinking",
    "ThinkingBlock",
    "Timings",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "collect",
    "local_thinking",
    "merge_thinking",
    "merge_tool_calls",
    "normalise_finish_reason",
    "prompt_request",
    "shows_local_thinking",
    "to_inference_result",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


# --- the teaching contract ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What a backend is: its configured name, the model it serves, and anything else useful."""

    name: str
    model_id: str
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """One blocking completion. ``completion`` never contains the prompt."""

    prompt: str
    completion: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    backend: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of wall time (0 when nothing was timed)."""
        if self.latency_ms <= 0:
            return 0.0
        return self.completion_tokens / (self.latency_ms / 1000.0)


# --- the server contract --------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """A backend that also serves ``/v1/embeddings`` (its model must be an embedding model:
    ``capabilities: {embeddings: true}`` in the policy, or what the backend reports)."""

    async def aembed(self, request: EmbeddingRequest) -> Embeddings: ...


@dataclass(frozen=True, slots=True)
class Health:
    """The result of a health probe. ``detail`` says what to do when ``ok`` is false."""

    ok: bool
    detail: str
    latency_ms: float | None = None


@runtime_checkable
class Backend(Protocol):
    """Somewhere the router can send a chat request (and the CLI a prompt).

    ``astream`` is declared without ``async`` so an async-generator method satisfies it; it
    returns an ``AsyncGenerator`` so callers can close a stream they stop reading
    (``contextlib.aclosing``), which stops the upstream.
    """

    @property
    def name(self) -> str:
        """The backend's name in the policy."""
        ...

    @property
    def model_id(self) -> str:
        """The model it serves, as its configuration (or the GGUF file) names it."""
        ...

    @property
    def context_window(self) -> int | None:
        """Prompt plus output tokens it takes, as far as it knows now (``None``: unknown)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What it can serve, as far as it knows now (before the policy's overrides, which
        ``adapters.capabilities.effective`` applies)."""
        ...

    @property
    def info(self) -> BackendInfo: ...

    def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> InferenceResult: ...

    async def acomplete(self, request: ChatRequest) -> Completion: ...

    def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]: ...

    async def prewarm(self) -> None: ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...


# --- the blocking complete(), once for every adapter ------------------------------------------


def to_inference_result(prompt: str, completion: Completion) -> InferenceResult:
    """Express a chat ``Completion`` in the teaching contract's terms."""
    timings = completion.timings
    return InferenceResult(
        prompt=prompt,
        completion=completion.text,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        latency_ms=timings.latency_ms,
        backend=completion.backend,
        metadata=MappingProxyType(
            {
                "model": completion.model,
                "finish_reason": completion.finish_reason,
                "ttft_ms": timings.ttft_ms,
                "server_ms": timings.server_ms,
                "load_ms": timings.load_ms,
                "cached_tokens": completion.usage.cached_tokens,
                "usage_estimated": completion.usage.estimated,
                "cache_write_tokens": completion.usage.cache_write_tokens,
            }
        ),
    )


def prompt_request(
    prompt: str,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> ChatRequest:
    """The ``ChatRequest`` behind a teaching-contract ``complete`` call."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    return ChatRequest.from_prompt(
        prompt, max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
    )


class BlockingComplete(ABC):
    """The teaching contract's blocking ``complete()``, for every adapter: the prompt as one
    user turn, answered by the adapter's own ``acomplete()`` run to the end on an event loop of
    the call's own (``adapters._blocking``: it may be called from any thread, or from inside a
    running loop, which it blocks), and expressed as an ``InferenceResult``."""

    @abstractmethod
    async def acomplete(self, request: ChatRequest) -> Completion: ...

    def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> InferenceResult:
        request = prompt_request(
            prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
        )
        return to_inference_result(prompt, run_blocking(self.acomplete(request)))

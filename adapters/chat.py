"""The chat values every backend speaks: messages and requests in, completions and stream
chunks out, embeddings, and the helpers adapters share to build them (Anthropic's thinking
blocks, which messages, completions and chunks carry, are in ``adapters.thinking``).

All values are frozen dataclasses; pydantic lives only at the edges (YAML, HTTP). The contract
that uses them (the ``Backend`` Protocol) is in ``adapters.base``, which re-exports them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from adapters.thinking import ThinkingBlock, merge_thinking

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user turn: an ``https://`` URL or a ``data:image/...;base64,`` URL, as
    OpenAI's ``image_url`` content part carries it."""

    url: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for. ``arguments`` is JSON text, as in OpenAI's wire
    format (adapters whose backend speaks objects, like Ollama, convert)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of each call carries ``id`` and
    ``name``, later ones more ``arguments`` text; ``index`` tells the calls apart."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call. ``parameters`` is its JSON schema (a read-only view)."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """OpenAI's ``tool_choice``: ``auto``, ``none``, ``required``, or one named ``function``."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """OpenAI's ``response_format``: any JSON object, or JSON matching ``schema``."""

    type: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn. ``content`` is plain text (a multi-part turn's text parts, joined);
    ``images`` are its image parts. An assistant turn may carry ``tool_calls``; a ``tool``
    turn answers the call named by ``tool_call_id``. An assistant turn may also carry the
    ``thinking`` blocks its answer began with (Anthropic's, signed): only the remote adapter
    sends them, and only to Anthropic's models, which can verify them."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[ImagePart, ...] = ()
    thinking: tuple[ThinkingBlock, ...] = ()


# The values OpenAI's chat API takes for ``reasoning_effort`` (the openai SDK's ReasoningEffort).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ThinkingType = Literal["enabled", "adaptive", "disabled"]
ThinkingDisplay = Literal["summarized", "omitted"]


@dataclass(frozen=True, slots=True)
class Thinking:
    """Anthropic's extended thinking, as its Messages API takes it: ``enabled`` with a token
    budget (``budget_tokens``), ``adaptive`` (the model decides how much), or ``disabled``;
    ``display`` says whether the thinking comes back summarized or not at all."""

    type: ThinkingType
    budget_tokens: int | None = None
    display: ThinkingDisplay | None = None

    @property
    def on(self) -> bool:
        return self.type != "disabled"

    def wire(self) -> dict[str, str | int]:
        """Anthropic's JSON form (what litellm passes on to Anthropic's models)."""
        out: dict[str, str | int] = {"type": self.type}
        if self.budget_tokens is not None:
            out["budget_tokens"] = self.budget_tokens
        if self.display is not None:
            out["display"] = self.display
        return out


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the router sends to a backend. The backend's own model id is in its config.

    ``None`` means "the backend's default"; adapters only forward what was set.
    """

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # OpenAI's penalties (-2.0 to 2.0): each generated token's logit is lowered by
    # ``presence_penalty`` once it has appeared and by ``frequency_penalty`` per appearance.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    user: str | None = None
    # OpenAI's reasoning effort, for reasoning models: sent by the OpenAI-compatible and remote
    # (litellm) adapters; the others have no such knob.
    reasoning_effort: ReasoningEffort | None = None
    # Anthropic's extended thinking: sent by the remote (litellm) adapter, which passes it to
    # Anthropic's models, and by the Ollama adapter as ``think`` to a model that can think.
    thinking: Thinking | None = None
    # Choices the client asked for. Adapters always answer one; the gateway asks again for
    # the rest (gateway.routing.choices), since most backends have no such parameter.
    n: int = 1
    # Who may reuse what this request leaves in a backend's own caches (the tiny tier's prompt
    # prefix state): set by the gateway from the caller's team or key, never from a client's
    # request; None: anyone.
    cache_scope: str | None = None
    # W3C trace context (``traceparent``, ``tracestate``) that HTTP adapters send upstream, so
    # the upstream's spans join the gateway's trace. Set by the gateway per attempt, never
    # from a client's request.
    trace_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Iterable[str] = (),
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
    ) -> ChatRequest:
        """A single user turn: how the teaching ``complete(prompt)`` reaches a chat model."""
        return cls(
            messages=(Message(role="user", content=prompt),),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=tuple(stop),
            seed=seed,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``cached_tokens`` of the prompt were read from the provider's prompt cache,
    ``cache_write_tokens`` of it were written there (both inside ``prompt_tokens``; hosted APIs
    price them differently). ``estimated`` is true when we counted rather than the backend
    reported."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Timings:
    """Where the time went, in milliseconds.

    ``latency_ms`` is wall time from sending the request to the last byte; ``ttft_ms`` the wall
    time to the first generated text; ``server_ms`` what the backend says it spent (``None`` when
    it does not say); ``load_ms`` the part of it spent loading the model, so a cold load is not
    mistaken for a slow or dead backend.
    """

    latency_ms: float
    ttft_ms: float | None = None
    server_ms: float | None = None
    load_ms: float | None = None


FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error"]


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer from ``acomplete``."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    backend: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: Any = None  # the backend's OpenAI-shaped ``logprobs`` object, passed through
    # Which of the request's ``stop`` strings ended the answer (``finish_reason`` "stop"), when
    # the backend says: the in-process models match stops themselves, some servers report it
    # (vLLM's ``stop_reason``). ``None``: it ended otherwise, or the backend does not tell.
    stop_sequence: str | None = None
    # Anthropic's extended-thinking blocks the answer began with, in order (remote Anthropic
    # models'; a local reasoning model's, unsigned, from the Ollama and OpenAI-compatible
    # adapters; empty for every other backend).
    thinking: tuple[ThinkingBlock, ...] = ()

    @property
    def reasoning(self) -> str:
        """The readable thinking, joined (redacted blocks have none)."""
        return "".join(block.thinking for block in self.thinking)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed answer. The last chunk carries ``finish_reason``, ``usage``,
    ``timings`` and ``stop_sequence`` (as ``Completion``'s); the ones before carry text (and
    tool-call pieces) only."""

    delta: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: Any = None  # the backend's OpenAI-shaped ``logprobs`` for this piece
    stop_sequence: str | None = None
    thinking: tuple[ThinkingBlock, ...] = ()  # pieces of thinking blocks (see ThinkingBlock)


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Texts to embed (one vector each), as ``/v1/embeddings`` sends them."""

    inputs: tuple[str, ...]
    dimensions: int | None = None
    user: str | None = None
    trace_headers: tuple[tuple[str, str], ...] = ()  # as ``ChatRequest.trace_headers``


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in input order; ``usage.prompt_tokens`` is what was read."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    timings: Timings
    backend: str
    model: str


# --- helpers shared by adapters -------------------------------------------------------------


def normalise_finish_reason(value: str | None, *, hit_limit: bool = False) -> FinishReason:
    """Map the many spellings backends use onto OpenAI's finish reasons."""
    if hit_limit:
        return "length"
    match value:
        case "length" | "max_tokens" | "MAX_TOKENS":
            return "length"
        case "content_filter" | "safety":
            return "content_filter"
        case "tool_calls" | "function_call" | "tool_use":
            return "tool_calls"
        case _:
            return "stop"


def merge_tool_calls(deltas: Iterable[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """Whole tool calls from streamed pieces (joined by ``index``, in order of first sight)."""
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        entry = calls.setdefault(delta.index, ["", "", ""])
        if delta.id:
            entry[0] = delta.id
        if delta.name:
            entry[1] = delta.name
        entry[2] += delta.arguments
    return tuple(
        ToolCall(id=call_id or f"call_{index}", name=name, arguments=arguments)
        for index, (call_id, name, arguments) in calls.items()
    )


async def collect(backend: str, model: str, chunks: AsyncIterator[Chunk]) -> Completion:
    """Join a stream into one ``Completion`` (the stream's last chunk supplies usage/timings)."""
    parts: list[str] = []
    deltas: list[ToolCallDelta] = []
    thinking: list[ThinkingBlock] = []
    finish: FinishReason = "stop"
    stop_sequence: str | None = None
    usage = Usage(estimated=True)
    timings = Timings(latency_ms=0.0)
    async for chunk in chunks:
        parts.append(chunk.delta)
        deltas.extend(chunk.tool_calls)
        thinking.extend(chunk.thinking)
        if chunk.finish_reason is not None:
            finish, stop_sequence = chunk.finish_reason, chunk.stop_sequence
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.timings is not None:
            timings = chunk.timings
    return Completion(
        text="".join(parts),
        finish_reason=finish,
        usage=usage,
        timings=timings,
        backend=backend,
        model=model,
        tool_calls=merge_tool_calls(deltas),
        stop_sequence=stop_sequence,
        thinking=merge_thinking(thinking),
    )

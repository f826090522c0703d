"""What a backend can serve: context window, output limit, tools, JSON output, images, ...

Every adapter type has defaults (``defaults_for``); a backend refines them from what it learns
at run time (litellm's model map for a remote model, Ollama's ``/api/show`` for a local one);
the policy has the last word (``capabilities:`` on a backend, every field optional). The router
only sends a request to a backend whose capabilities cover what the request needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.config import ArtifactConfig, OllamaConfig, TinyConfig

if TYPE_CHECKING:
    from adapters.base import Backend
    from adapters.config import BackendConfig, CapabilitiesConfig


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A backend's capabilities. ``None`` limits mean "unknown": the router does not filter
    on them (the backend itself rejects what does not fit)."""

    context_window: int | None = None
    max_output_tokens: int | None = None
    chat: bool = True
    tools: bool = False
    parallel_tool_calls: bool = False
    tool_choice: bool = False  # enforces tool_choice "required" or a named function
    json_mode: bool = False  # response_format {"type": "json_object"}
    json_schema: bool = False  # response_format {"type": "json_schema", ...}
    vision: bool = False  # image parts in user messages
    logprobs: bool = False
    streaming: bool = True
    embeddings: bool = False

    def overridden(self, config: CapabilitiesConfig | None) -> Capabilities:
        """These capabilities with every field the policy set replaced."""
        if config is None:
            return self
        changes: dict[str, Any] = {
            name: value for name, value in config.model_dump().items() if value is not None
        }
        return dataclasses.replace(self, **changes)

    def names(self) -> list[str]:
        """The boolean capabilities this backend has, for messages and ``policy explain``."""
        return [name for name, value in dataclasses.asdict(self).items() if value is True]


# Per adapter type, before anything is learnt at run time.
# The tiny adapter does JSON mode and schemas by grammar-constrained decoding, but it is off
# by default: llama-cpp-python applies the grammar over the whole vocabulary at every token
# (several times slower), and a 135M model rambles into max_tokens, cutting the JSON short.
# A policy turns it on with `capabilities: {json_mode: true, json_schema: true}`.
# It returns token log-probs when asked (adapters.tiny.logprobs, ~0.1 ms a token) but does not
# declare them: a policy that wants logprobs requests (or a confidence cascade) on a tiny
# backend says `capabilities: {logprobs: true}`.
TINY = Capabilities()
# A transformers artifact: plain chat, streamed. Its context window is the model config's
# max_position_embeddings (read from config.json by the backend).
ARTIFACT = Capabilities()
OLLAMA = Capabilities(tools=True, parallel_tool_calls=True, json_mode=True, json_schema=True)
# Ollama's /api/chat has no tool_choice: "required" or a named function cannot be enforced.
OPENAI_COMPAT = Capabilities(
    tools=True,
    parallel_tool_calls=True,
    tool_choice=True,
    json_mode=True,
    json_schema=True,
    logprobs=True,
)
REMOTE = Capabilities(
    tools=True, parallel_tool_calls=True, tool_choice=True, json_mode=True, json_schema=True
)
# The fake scripts whatever a test needs; a test narrows it (or, when its script gives token
# log-probs, widens it) with ``capabilities:``.
FAKE = Capabilities(
    tools=True,
    parallel_tool_calls=True,
    tool_choice=True,
    json_mode=True,
    json_schema=True,
    vision=True,
    embeddings=True,
)
_BY_TYPE = {
    "tiny": TINY,
    "ollama": OLLAMA,
    "openai_compat": OPENAI_COMPAT,
    "remote": REMOTE,
    "artifact": ARTIFACT,
    "fake": FAKE,
}


def defaults_for(config: BackendConfig) -> Capabilities:
    """What a backend of this configuration can do, known without contacting it."""
    base = _BY_TYPE[config.type]
    window: int | None = None
    if isinstance(config, TinyConfig):
        window = config.n_ctx
    elif isinstance(config, OllamaConfig):
        window = config.num_ctx
    elif isinstance(config, ArtifactConfig):
        window = _artifact_window(config)
    if window is not None:
        base = dataclasses.replace(base, context_window=window)
    return base


def _artifact_window(config: ArtifactConfig) -> int | None:
    from adapters.artifact.files import ArtifactFileError, context_length, read_config

    try:
        return context_length(read_config(Path(config.path)))
    except ArtifactFileError:
        return None


def declared(config: BackendConfig) -> Capabilities:
    """The type's defaults with the policy's ``capabilities:`` applied (no run-time facts)."""
    return defaults_for(config).overridden(config.capabilities)


# Providers whose chat API returns token logprobs in OpenAI's shape (litellm's map has no flag
# for it); their reasoning models do not.
LOGPROB_PROVIDERS = frozenset({"openai", "azure"})


def from_litellm_info(
    info: Any, base: Capabilities = REMOTE, provider: str | None = None
) -> Capabilities:
    """Capabilities from one entry of litellm's model map (``get_model_info``)."""
    if not hasattr(info, "get"):
        return base

    def flag(key: str, default: bool) -> bool:
        value = info.get(key)
        return value if isinstance(value, bool) else default

    def count(key: str) -> int | None:
        value = info.get(key)
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        )

    embedding = info.get("mode") == "embedding"
    tools = flag("supports_function_calling", base.tools)
    provider = provider or info.get("litellm_provider")
    return Capabilities(
        context_window=count("max_input_tokens") or base.context_window,
        max_output_tokens=count("max_output_tokens") or base.max_output_tokens,
        chat=not embedding,
        tools=tools and not embedding,
        parallel_tool_calls=flag("supports_parallel_function_calling", tools) and not embedding,
        tool_choice=flag("supports_tool_choice", tools) and tools and not embedding,
        json_mode=not embedding and base.json_mode,
        json_schema=flag("supports_response_schema", base.json_schema) and not embedding,
        vision=flag("supports_vision", base.vision) and not embedding,
        logprobs=base.logprobs
        or (
            provider in LOGPROB_PROVIDERS
            and not embedding
            and not flag("supports_reasoning", False)
        ),
        streaming=not embedding,
        embeddings=embedding,
    )


def effective(backend: Backend, config: BackendConfig) -> Capabilities:
    """A live backend's capabilities: what it reports (with its known ``context_window`` when
    the report leaves the window open), then the policy's overrides."""
    caps = backend.capabilities
    window = backend.context_window
    if caps.context_window is None and window is not None:
        caps = dataclasses.replace(caps, context_window=window)
    return caps.overridden(config.capabilities)

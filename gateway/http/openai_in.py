"""The OpenAI wire format at the HTTP edge: request models (pydantic, parsed straight from the
body bytes; ``gateway.http.validation`` turns their errors into 400s naming the field), which
``openai_requests`` translates.

Unknown fields are refused (like OpenAI does), which also means a client can never smuggle an
upstream URL, key or header through the body. Tools, tool calls and results, images,
``response_format``, ``logprobs`` and ``user`` are carried to the backend (the router picks only
backends that can honour them, see ``gateway.routing.needs``). Fields OpenAI defines that
tiergate cannot honour yet are refused by name rather than silently dropped; a few that change
nothing about the answer (``metadata``, within OpenAI's bounds; ``store``, ``service_tier``,
and on chat ``prompt_cache_key``, ``prompt_cache_retention``, ``safety_identifier``,
``modalities`` of text alone) are accepted and not forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from adapters.chat import ReasoningEffort
from gateway.errors import BadRequest
from gateway.http.validation import validation_error

_M = TypeVar("_M", bound=BaseModel)


class _Wire(BaseModel):
    # strict: a string is not a number ("10" for max_tokens) and 1 is not a boolean, as at
    # OpenAI; JSON integers are still accepted where a float is expected.
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageUrl(_Wire):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Wire):
    type: Literal["image_url"]
    image_url: ImageUrl


class OtherPart(BaseModel):
    """Audio, files: accepted by the schema so the refusal can name them."""

    model_config = ConfigDict(extra="allow")
    type: Literal["input_audio", "file", "refusal"]


ContentPart = Annotated[TextPart | ImageUrlPart | OtherPart, Field(discriminator="type")]


class FunctionCallIn(_Wire):
    name: str = Field(min_length=1)
    arguments: str


class ToolCallIn(_Wire):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class FunctionIn(_Wire):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Wire):
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(_Wire):
    name: str = Field(min_length=1)


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


def mode_or_named(value: object) -> str | None:
    """Which form of ``tool_choice`` a value takes: a mode's name, or an object naming a
    function (so an incomplete object is reported as that, not as an unknown mode)."""
    if isinstance(value, str):
        return "mode"
    if isinstance(value, dict | BaseModel):
        return "named"
    return None


ToolChoiceIn = Annotated[
    Annotated[Literal["auto", "none", "required"], Tag("mode")]
    | Annotated[NamedToolChoice, Tag("named")],
    Discriminator(
        mode_or_named,
        custom_error_type="tool_choice_type",
        custom_error_message=(
            "Input should be 'auto', 'none', 'required' or {\"type\": \"function\", "
            '"function": {"name": ...}}'
        ),
    ),
]


class MessageIn(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    # Fields the openai SDK echoes back when an app re-sends an assistant message it received.
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any | None = None
    function_call: Any | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    # The thinking an answer showed (``reasoning_content``), echoed back: not forwarded (it
    # carries no signature, so no backend could take it as thinking).
    reasoning_content: str | None = None


class StreamOptions(_Wire):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class JsonSchemaIn(_Wire):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None


class SamplingIn(_Wire):
    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # 64-bit, as OpenAI's
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


class ChatCompletionIn(SamplingIn):
    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    reasoning_effort: ReasoningEffort | None = None  # anything else: a 400 naming the values
    # Hints to OpenAI's own prompt cache and abuse detection: nothing a backend here takes.
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text"]] | None = None  # audio out: a 400 naming modalities[i]


class CompletionIn(SamplingIn):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for this endpoint
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = Field(default=None, ge=1)


MAX_DIMENSIONS = 16_384  # above every embedding model's width (OpenAI's largest: 3,072)


class EmbeddingIn(_Wire):
    """https://platform.openai.com/docs/api-reference/embeddings/create"""

    model: str | None = Field(default=None, min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    # Bounded: a backend would build (or a fake would allocate) a vector this long per input.
    dimensions: int | None = Field(default=None, ge=1, le=MAX_DIMENSIONS)
    user: str | None = None


# OpenAI's bounds on ``metadata``: pairs, and characters of a key and of a value.
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


def check_metadata(metadata: Mapping[str, str] | None) -> None:
    """``metadata`` within OpenAI's bounds, else a 400 naming it (and the key at fault)."""
    if metadata is None:
        return
    if len(metadata) > METADATA_PAIRS:
        raise BadRequest(
            f"metadata: at most {METADATA_PAIRS} key-value pairs (got {len(metadata)})",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY:
            raise BadRequest(
                f"metadata: the key {key[:METADATA_KEY]!r}… is longer than {METADATA_KEY} "
                f"characters ({len(key)})",
                param="metadata",
                code="string_above_max_length",
            )
        if len(value) > METADATA_VALUE:
            raise BadRequest(
                f"metadata: the value of {key!r} is longer than {METADATA_VALUE} characters "
                f"({len(value)})",
                param="metadata",
                code="string_above_max_length",
            )


# --- parsing ----------------------------------------------------------------------------------


def parse_chat(body: bytes) -> ChatCompletionIn:
    return parse_as(ChatCompletionIn, body)


def parse_completion(body: bytes) -> CompletionIn:
    return parse_as(CompletionIn, body)


def parse_embedding(body: bytes) -> EmbeddingIn:
    return parse_as(EmbeddingIn, body)


def parse_as(model: type[_M], body: bytes, *, role_hints: Mapping[str, str] | None = None) -> _M:
    """``body`` as ``model``; a 400 naming the first field that is wrong (``role_hints``: where
    a role the API does not take belongs instead, by role)."""
    if not body.strip():
        raise BadRequest("the request body is empty: send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc, model, role_hints=role_hints) from None

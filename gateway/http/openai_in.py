"""The OpenAI wire format at the HTTP edge: request models (pydantic, parsed straight from the
body bytes) and validation errors that name the field (``openai_requests`` translates them).

Unknown fields are refused (like OpenAI does), which also means a client can never smuggle an
upstream URL, key or header through the body. Tools, tool calls and results, images,
``response_format``, ``logprobs`` and ``user`` are carried to the backend (the router picks only
backends that can honour them, see ``gateway.routing.needs``). Fields OpenAI defines that
tiergate cannot honour yet are refused by name rather than silently dropped; a few that change
nothing about the answer (``metadata``, ``store``, ``service_tier``) are accepted and not
forwarded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import BadRequest

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
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    reasoning_effort: str | None = None


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


# --- parsing ----------------------------------------------------------------------------------


def parse_chat(body: bytes) -> ChatCompletionIn:
    return parse_as(ChatCompletionIn, body)


def parse_completion(body: bytes) -> CompletionIn:
    return parse_as(CompletionIn, body)


def parse_embedding(body: bytes) -> EmbeddingIn:
    return parse_as(EmbeddingIn, body)


def parse_as(model: type[_M], body: bytes) -> _M:
    """``body`` as ``model``; a 400 naming the first field that is wrong."""
    if not body.strip():
        raise BadRequest("the request body is empty: send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> BadRequest:
    """The first problem of a pydantic error, as OpenAI reports it: a message naming the field,
    and ``param`` holding its path (``messages[0].role``)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadRequest(
            f"the request body is not valid JSON: {first['ctx'].get('error', first['msg'])}",
            code="invalid_json",
        )
    if first["type"] == "model_type" and not first["loc"]:
        return BadRequest("the request body must be a JSON object", code="invalid_json")
    loc = _visible_loc(first["loc"])
    # A union reports one error per branch, the plainest first ("should be a valid string");
    # the error that got furthest into the same field says more.
    chosen = max(
        (e for e in errors if _visible_loc(e["loc"])[: len(loc)] == loc),
        key=lambda e: len(_visible_loc(e["loc"])),
    )
    loc = _visible_loc(chosen["loc"])
    param = _param(loc)
    return BadRequest(f"{param}: {_describe(chosen, loc)}", param=param, code=chosen["type"])


def _visible_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union-branch markers (``str``, ``list[...]``, tag names) from a loc."""
    kept: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and (
            part in ("str", "int", "float", "bool", "none", "text", "image_url", "input_audio")
            or part.startswith(("list[", "function-", "tagged-union", "dict["))
        ):
            continue
        kept.append(part)
    return tuple(kept)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _describe(error: Any, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        if loc and loc[-1] in _UPSTREAM_FIELDS:
            return (
                "clients cannot choose upstream URLs, keys or headers; the gateway's policy "
                "decides where requests go"
            )
        return "unrecognized request argument"
    if kind == "missing":
        return "required field missing"
    if kind == "too_short" and loc == ("messages",):
        return "must hold at least one message"
    if kind == "literal_error" and loc and loc[-1] == "role":
        return f"unknown role {error.get('input')!r}; use system, developer, user, assistant, tool"
    if kind.endswith("_type"):
        return f"{error['msg']}, got {_json_kind(error.get('input'))}"
    return str(error["msg"])


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_UPSTREAM_FIELDS = frozenset(
    ("api_base", "base_url", "api_key", "headers", "extra_headers", "custom_llm_provider", "url")
)

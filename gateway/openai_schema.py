"""The OpenAI wire format at the HTTP edge: request models (pydantic, parsed straight from the
body bytes) and their translation into the adapters' ``ChatRequest``.

Unknown fields are refused (like OpenAI does), which also means a client can never smuggle an
upstream URL, key or header through the body. Tools, tool calls and results, images,
``response_format``, ``logprobs`` and ``user`` are carried to the backend (the router picks only
backends that can honour them, see ``gateway.capabilities``). Fields OpenAI defines that
tiergate cannot honour yet are refused by name rather than silently dropped; a few that change
nothing about the answer (``metadata``, ``store``, ``service_tier``) are accepted and not
forwarded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.base import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)
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


class _Sampling(_Wire):
    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


class ChatCompletionIn(_Sampling):
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


class CompletionIn(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for this endpoint
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = Field(default=None, ge=1)


class EmbeddingIn(_Wire):
    """https://platform.openai.com/docs/api-reference/embeddings/create"""

    model: str | None = Field(default=None, min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


# --- parsing ----------------------------------------------------------------------------------


def parse_chat(body: bytes) -> ChatCompletionIn:
    return _parse(ChatCompletionIn, body)


def parse_completion(body: bytes) -> CompletionIn:
    return _parse(CompletionIn, body)


def parse_embedding(body: bytes) -> EmbeddingIn:
    return _parse(EmbeddingIn, body)


def _parse(model: type[_M], body: bytes) -> _M:
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


# --- translation ------------------------------------------------------------------------------


def _parts(
    content: str | list[TextPart | ImageUrlPart | OtherPart] | None, where: str
) -> tuple[str, tuple[ImagePart, ...]]:
    """A turn's text (text parts joined) and its images."""
    if content is None:
        return "", ()
    if isinstance(content, str):
        return content, ()
    texts: list[str] = []
    images: list[ImagePart] = []
    for i, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImageUrlPart):
            images.append(ImagePart(url=part.image_url.url, detail=part.image_url.detail))
        else:
            raise BadRequest(
                f"{where}.content[{i}].type: content parts of type {part.type!r} are not "
                f"supported yet; send text or image_url parts",
                param=f"{where}.content[{i}].type",
                code="unsupported_content",
            )
    return "\n".join(texts), tuple(images)


def _messages(items: list[MessageIn]) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, m in enumerate(items):
        where = f"messages[{i}]"
        if m.function_call is not None:
            raise BadRequest(
                f"{where}.function_call: the legacy function_call is not supported; use tool_calls",
                param=f"{where}.function_call",
                code="unsupported_feature",
            )
        if m.content is None and m.role != "assistant":
            raise BadRequest(
                f"{where}.content: required for role {m.role!r}",
                param=f"{where}.content",
                code="missing",
            )
        if m.role == "tool" and not m.tool_call_id:
            raise BadRequest(
                f"{where}.tool_call_id: a tool message must name the call it answers",
                param=f"{where}.tool_call_id",
                code="missing",
            )
        if m.tool_calls and m.role != "assistant":
            raise BadRequest(
                f"{where}.tool_calls: only assistant messages carry tool calls",
                param=f"{where}.tool_calls",
            )
        text, images = _parts(m.content, where)
        if images and m.role != "user":
            raise BadRequest(
                f"{where}.content: images may only be sent in user messages",
                param=f"{where}.content",
                code="unsupported_content",
            )
        role: Role = "system" if m.role == "developer" else m.role
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in m.tool_calls or ()
        )
        out.append(
            Message(
                role=role,
                content=text,
                name=m.name,
                tool_calls=calls,
                tool_call_id=m.tool_call_id if m.role == "tool" else None,
                images=images,
            )
        )
    if not any(m.role == "user" for m in out):
        raise BadRequest(
            "messages: at least one message must have role 'user'",
            param="messages",
            code="missing_user_message",
        )
    return tuple(out)


def _tools(body: ChatCompletionIn) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    tools = tuple(
        Tool(
            name=t.function.name,
            description=t.function.description,
            parameters=t.function.parameters or {"type": "object", "properties": {}},
            strict=t.function.strict,
        )
        for t in body.tools or ()
    )
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise BadRequest("tools: two tools have the same function name", param="tools")
    choice: ToolChoice | None = None
    if isinstance(body.tool_choice, NamedToolChoice):
        name = body.tool_choice.function.name
        if name not in names:
            raise BadRequest(
                f"tool_choice.function.name: {name!r} is not one of the tools sent "
                f"({', '.join(names) or 'none'})",
                param="tool_choice.function.name",
            )
        choice = ToolChoice(mode="function", name=name)
    elif body.tool_choice is not None:
        if body.tool_choice != "none" and not tools:
            raise BadRequest(
                f"tool_choice: {body.tool_choice!r} needs `tools`", param="tool_choice"
            )
        choice = ToolChoice(mode=body.tool_choice)
    return tools, choice


def _response_format(value: ResponseFormatIn | None) -> ResponseFormat | None:
    if value is None or value.type == "text":
        return None
    if value.type == "json_object":
        return ResponseFormat(type="json_object")
    spec = value.json_schema
    if spec is None:
        raise BadRequest(
            "response_format.json_schema: required when type is 'json_schema'",
            param="response_format.json_schema",
            code="missing",
        )
    return ResponseFormat(
        type="json_schema", schema=spec.schema_ or {}, name=spec.name, strict=spec.strict
    )


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > 4:
        raise BadRequest("stop: at most 4 stop sequences", param="stop", code="too_long")
    return tuple(s for s in stops if s)


# Choices beyond the first are asked of the backend again, one call each: keep it bounded.
MAX_CHOICES = 16


def _common_refusals(body: _Sampling) -> None:
    if body.n is not None and body.n > MAX_CHOICES:
        raise BadRequest(
            f"n: at most {MAX_CHOICES} choices per request", param="n", code="out_of_range"
        )
    if body.logit_bias:
        raise BadRequest(
            "logit_bias is not supported: backends tokenize differently", param="logit_bias"
        )


def chat_request(body: ChatCompletionIn, max_tokens_limit: int) -> ChatRequest:
    """The adapters' request for an OpenAI chat body. Raises BadRequest for what we cannot do."""
    _common_refusals(body)
    if body.functions:
        raise BadRequest(
            "functions: the legacy functions parameter is not supported; send `tools`",
            param="functions",
            code="unsupported_feature",
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequest("top_logprobs: needs logprobs set to true", param="top_logprobs")
    tools, tool_choice = _tools(body)
    if (
        body.max_tokens is not None
        and body.max_completion_tokens is not None
        and body.max_tokens != body.max_completion_tokens
    ):
        raise BadRequest(
            "max_tokens and max_completion_tokens disagree; send one of them",
            param="max_completion_tokens",
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    check_max_tokens(max_tokens, max_tokens_limit, "max_tokens")
    return ChatRequest(
        messages=_messages(body.messages),
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=_stops(body.stop),
        seed=body.seed,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls if tools else None,
        response_format=_response_format(body.response_format),
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        user=body.user,
        n=body.n or 1,
    )


def completion_request(body: CompletionIn, max_tokens_limit: int) -> ChatRequest:
    """``/v1/completions`` reaches chat backends as one user turn holding the prompt."""
    _common_refusals(body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise BadRequest("prompt: send exactly one prompt string per request", param="prompt")
    unsupported = {
        "echo": bool(body.echo),
        "suffix": bool(body.suffix),
        "logprobs": body.logprobs is not None,  # even 0 asks for a logprobs field
        "best_of": (body.best_of or 1) > 1,
    }
    for field, used in unsupported.items():
        if used:
            raise BadRequest(f"{field} is not supported", param=field, code="unsupported_feature")
    if not prompts[0].strip():
        raise BadRequest("prompt: must not be empty", param="prompt")
    check_max_tokens(body.max_tokens, max_tokens_limit, "max_tokens")
    return ChatRequest(
        messages=(Message(role="user", content=prompts[0]),),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=_stops(body.stop),
        seed=body.seed,
        n=body.n or 1,
    )


def check_max_tokens(value: int | None, limit: int, param: str) -> None:
    if value is not None and value > limit:
        raise BadRequest(
            f"{param}: {value} is above this gateway's limit of {limit} (limits.max_tokens in "
            f"the policy)",
            param=param,
            code="out_of_range",
        )


# Like OpenAI's: at most this many inputs in one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


def embedding_request(body: EmbeddingIn) -> EmbeddingRequest:
    """The adapters' embedding request. Token-id inputs are refused: backends tokenize apart."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise BadRequest("input: send at least one string", param="input", code="too_short")
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest(
            "input: token-id arrays are not supported (backends tokenize differently); send text",
            param="input",
            code="unsupported_value",
        )
    strings = [t for t in texts if isinstance(t, str)]
    if len(strings) > MAX_EMBEDDING_INPUTS:
        raise BadRequest(
            f"input: at most {MAX_EMBEDDING_INPUTS} strings per request",
            param="input",
            code="too_long",
        )
    for i, text in enumerate(strings):
        if not text:
            raise BadRequest(f"input[{i}]: must not be empty", param=f"input[{i}]")
    return EmbeddingRequest(inputs=tuple(strings), dimensions=body.dimensions, user=body.user)

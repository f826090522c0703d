"""OpenAI Responses request bodies (``POST /v1/responses``, stateless), validated with pydantic
and translated into the adapters' ``ChatRequest``: ``input`` as a string or items (messages
with text and image parts, function calls and their outputs), ``instructions``, function
``tools``, ``tool_choice``, ``max_output_tokens``, ``text.format``. Responses are not stored:
``previous_response_id`` and ``store: true`` are refused by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from adapters.base import ChatRequest, ImagePart, Message, ResponseFormat, Tool, ToolCall
from adapters.base import ToolChoice as ChatToolChoice
from adapters.chat import ReasoningEffort
from gateway.errors import BadRequest
from gateway.http.openai_in import check_metadata, mode_or_named, parse_as
from gateway.routing.plan import check_max_tokens


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Item(BaseModel):
    # Clients send back the output items they got, with ids and statuses: ignored.
    model_config = ConfigDict(extra="ignore", strict=True)


class InputText(_Item):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class OtherPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["input_file", "input_audio", "refusal"]


Part = Annotated[InputText | InputImage | OtherPart, Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str


class OtherItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal[
        "reasoning",
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "item_reference",
    ]


OTHER_ITEMS = frozenset(get_args(OtherItem.model_fields["type"].annotation))


def _item_kind(value: object) -> str | None:
    """An item's tag: its ``type``, ``message`` when it has none (OpenAI's easy input
    messages), ``other`` for the item types refused by name; ``None`` for anything else."""
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    if kind in OTHER_ITEMS:
        return "other"
    return kind if kind in ("message", "function_call", "function_call_output") else None


# Tagged by ``type``, so an item's error names the field its own type lacks (``call_id`` of a
# function_call_output) rather than what a message would have needed.
Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionOutputItem, Tag("function_call_output")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(
        _item_kind,
        custom_error_type="input_item_invalid",
        custom_error_message=(
            "Input should be an item of type 'message', 'function_call' or "
            "'function_call_output' (or a message with `role` and `content`)"
        ),
        custom_error_context={"discriminator": "'type'"},
    ),
]


class FunctionTool(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1)


ToolChoice = Annotated[
    Annotated[Literal["auto", "none", "required"], Tag("mode")]
    | Annotated[NamedFunction, Tag("named")],
    Discriminator(
        mode_or_named,
        custom_error_type="tool_choice_type",
        custom_error_message=(
            "Input should be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}"
        ),
    ),
]


class FormatIn(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextIn(_Wire):
    format: FormatIn | None = None
    verbosity: str | None = None


class StreamOptionsIn(_Wire):
    # Recent openai SDKs send it; accepted and ignored: tiergate's events carry no padding.
    include_obfuscation: bool | None = None


class ReasoningIn(_Wire):
    # ``effort`` is chat's ``reasoning_effort``; summaries are accepted and none come back.
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesIn(_Wire):
    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    text: TextIn | None = None
    stream: bool | None = None
    stream_options: StreamOptionsIn | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: ReasoningIn | None = None
    include: list[str] | None = None
    # Hints to OpenAI's own prompt cache, abuse detection and capacity: accepted, not forwarded
    # (they change nothing about the answer).
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None


def parse_responses(body: bytes) -> ResponsesIn:
    hints = {"tool": "a function's result goes in a `function_call_output` item"}
    parsed = parse_as(ResponsesIn, body, role_hints=hints)
    if parsed.previous_response_id is not None:
        raise BadRequest(
            "previous_response_id: this gateway keeps no responses; send the whole "
            "conversation in `input` (the earlier output items as they came back)",
            param="previous_response_id",
            code="unsupported_feature",
        )
    for i, extra in enumerate(parsed.include or ()):
        # The other values add outputs of tools and items this gateway never returns.
        if extra == "message.output_text.logprobs":
            raise BadRequest(
                f"include[{i}]: {extra!r} is not supported here (no logprobs come back on "
                f"/v1/responses); ask /v1/chat/completions with `logprobs: true`",
                param=f"include[{i}]",
                code="unsupported_feature",
            )
    check_metadata(parsed.metadata)
    if parsed.store:
        raise BadRequest(
            "store: this gateway keeps no responses (stateless); send `store: false` or leave "
            "it out",
            param="store",
            code="unsupported_feature",
        )
    return parsed


def echoed(body: ResponsesIn) -> dict[str, Any]:
    """What the ``response`` object repeats of the request, as OpenAI's does: the values sent,
    else OpenAI's defaults where they say what happened (no tools, ``auto``, plain text, no
    truncation); sampling values not sent stay ``null`` (the backend's own default applied)."""
    reasoning = body.reasoning.model_dump(exclude_none=True) if body.reasoning else {}
    text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {}
    choice = body.tool_choice or "auto"
    return {
        "instructions": body.instructions,
        "metadata": body.metadata or {},
        "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tools": [t.model_dump(mode="json", by_alias=True) for t in body.tools or ()],
        "tool_choice": choice.model_dump() if isinstance(choice, NamedFunction) else choice,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "text": {"format": {"type": "text"}, **text},
        "truncation": body.truncation or "disabled",
        "reasoning": {"effort": None, "summary": None, **reasoning},
        "user": body.user,
        "prompt_cache_key": body.prompt_cache_key,
        "prompt_cache_retention": body.prompt_cache_retention,
        "safety_identifier": body.safety_identifier,
        "previous_response_id": None,
        "background": False,
    }


def chat_request(body: ResponsesIn, max_tokens_limit: int) -> ChatRequest:
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message(role="system", content=body.instructions))
    if isinstance(body.input, str):
        messages.append(Message(role="user", content=body.input))
    else:
        _items(body.input, messages)
    if not messages:
        raise BadRequest("input: no message to answer", param="input", code="missing")
    if body.max_output_tokens is not None:
        check_max_tokens(body.max_output_tokens, max_tokens_limit, "max_output_tokens")
    tools = tuple(
        Tool(name=t.name, description=t.description, parameters=t.parameters or {}, strict=t.strict)
        for t in body.tools or ()
    )
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice, tools),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=_format(body.text),
        user=body.user,
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
    )


def _items(items: list[Item], out: list[Message]) -> None:
    called: set[str] = set()  # the call ids of the function_call items so far
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            text, images = _content(item.content, where)
            role = "system" if item.role == "developer" else item.role
            out.append(Message(role=role, content=text, images=images))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            called.add(item.call_id)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not last.content:
                out[-1] = Message(role="assistant", content="", tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message(role="assistant", content="", tool_calls=(call,)))
        elif isinstance(item, FunctionOutputItem):
            if item.call_id not in called:  # stateless: the call must be in this input
                raise BadRequest(
                    f"{where}.call_id: {item.call_id!r} answers no function_call item before "
                    f"it in `input`; send the function_call item (as it came back) first",
                    param=f"{where}.call_id",
                    code="invalid_value",
                )
            out.append(Message(role="tool", content=item.output, tool_call_id=item.call_id))
        else:
            raise BadRequest(
                f"{where}.type: input items of type {item.type!r} are not supported; send "
                f"messages, function_call and function_call_output items",
                param=f"{where}.type",
                code="unsupported_content",
            )


def _content(content: str | list[Part], where: str) -> tuple[str, tuple[ImagePart, ...]]:
    if isinstance(content, str):
        return content, ()
    texts: list[str] = []
    images: list[ImagePart] = []
    for j, part in enumerate(content):
        if isinstance(part, InputText):
            texts.append(part.text)
        elif isinstance(part, InputImage) and part.image_url:
            images.append(ImagePart(url=part.image_url, detail=part.detail))
        else:
            raise BadRequest(
                f"{where}.content[{j}].type: content parts of type {part.type!r} are not "
                f"supported; send input_text or input_image (with image_url) parts",
                param=f"{where}.content[{j}].type",
                code="unsupported_content",
            )
    return "\n".join(texts), tuple(images)


def _tool_choice(
    choice: Literal["auto", "none", "required"] | NamedFunction | None, tools: tuple[Tool, ...]
) -> ChatToolChoice | None:
    """The choice; one that forces a call must have ``tools`` to call (and name one of them),
    else the answer would be text the client did not ask for."""
    if choice is None:
        return None
    names = [t.name for t in tools]
    if isinstance(choice, NamedFunction):
        if choice.name not in names:
            raise BadRequest(
                f"tool_choice.name: {choice.name!r} is not one of the tools sent "
                f"({', '.join(names) or 'none'})",
                param="tool_choice.name",
                code="invalid_value",
            )
        return ChatToolChoice(mode="function", name=choice.name)
    if choice == "required" and not tools:
        raise BadRequest(
            "tool_choice: 'required' needs `tools`: send the functions the model must choose from",
            param="tool_choice",
            code="missing",
        )
    return ChatToolChoice(mode=choice)


def _format(text: TextIn | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.schema_ is None or fmt.name is None:
        raise BadRequest(
            "text.format: a json_schema format needs `name` and `schema`",
            param="text.format",
            code="missing",
        )
    return ResponseFormat(type="json_schema", schema=fmt.schema_, name=fmt.name, strict=fmt.strict)

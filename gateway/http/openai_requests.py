"""OpenAI request bodies (``openai_in``) translated into the adapters' ``ChatRequest`` and
``EmbeddingRequest``: images, tools, tool calls and results, ``response_format``; fields tiergate
cannot honour are refused by name."""

from __future__ import annotations

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
from gateway.http.openai_in import (
    ChatCompletionIn,
    CompletionIn,
    EmbeddingIn,
    ImageUrlPart,
    MessageIn,
    NamedToolChoice,
    OtherPart,
    ResponseFormatIn,
    SamplingIn,
    TextPart,
    check_metadata,
)
from gateway.routing.plan import check_max_tokens


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
    called: set[str] = set()  # the ids of the assistant turns' tool calls so far
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
        if m.role == "tool" and m.tool_call_id not in called:
            raise BadRequest(
                f"{where}.tool_call_id: {m.tool_call_id!r} answers no tool call of an earlier "
                f"assistant message; send that message (with its tool_calls) first, or fix the id",
                param=f"{where}.tool_call_id",
                code="invalid_value",
            )
        if isinstance(m.content, list) and not m.content and m.role != "assistant":
            raise BadRequest(
                f"{where}.content: an empty array; send at least one content part (or a string)",
                param=f"{where}.content",
                code="empty_array",
            )
        if m.role == "assistant" and m.content in (None, []) and not m.tool_calls:
            raise BadRequest(
                f"{where}.content: an assistant message needs `content` or `tool_calls`",
                param=f"{where}.content",
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
        called.update(call.id for call in calls)
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


def _seed(seed: int | None) -> int | None:
    """A negative seed means no seed: llama.cpp reads -1 as "pick a random one", so such a
    request samples afresh every time and must not count as deterministic (nor be cached)."""
    return seed if seed is not None and seed >= 0 else None


# Choices beyond the first are asked of the backend again, one call each: keep it bounded.
MAX_CHOICES = 16


def _common_refusals(body: SamplingIn) -> None:
    check_metadata(body.metadata)
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
    if body.function_call is not None:
        raise BadRequest(
            "function_call: the legacy function_call parameter is not supported; send "
            "`tool_choice`",
            param="function_call",
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
    sent_as = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
    check_max_tokens(max_tokens, max_tokens_limit, sent_as)  # named as the client sent it
    return ChatRequest(
        messages=_messages(body.messages),
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=_stops(body.stop),
        seed=_seed(body.seed),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls if tools else None,
        response_format=_response_format(body.response_format),
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        user=body.user,
        n=body.n or 1,
        reasoning_effort=body.reasoning_effort,
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
        seed=_seed(body.seed),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        user=body.user,
        n=body.n or 1,
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

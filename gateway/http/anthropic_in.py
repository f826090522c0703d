"""Anthropic Messages request bodies (``POST /v1/messages``, ``/v1/messages/count_tokens``),
validated with pydantic and translated into the adapters' ``ChatRequest``: system prompt, text,
image, ``tool_use`` and ``tool_result`` blocks, tools and ``tool_choice``. Anthropic's wire is
documented at https://docs.anthropic.com/en/api/messages."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolCall,
    ToolChoice,
)
from adapters.chat import ThinkingDisplay
from gateway.errors import BadRequest
from gateway.http.anthropic_blocks import (
    Block,
    ImageBlock,
    RedactedThinkingBlockIn,
    TextBlock,
    ThinkingBlockIn,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)
from gateway.http.openai_in import parse_as
from gateway.routing.plan import check_max_tokens


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MessageIn(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolIn(_Wire):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None
    # Strict tool use: the call's input follows ``input_schema`` exactly (forwarded).
    strict: bool | None = None


class ToolChoiceIn(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, min_length=1)
    disable_parallel_tool_use: bool | None = None


class ThinkingEnabled(_Wire):
    """Extended thinking with a token budget, which Anthropic takes from 1,024 tokens up to
    (not including) ``max_tokens``."""

    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: ThinkingDisplay | None = None


class ThinkingAdaptive(_Wire):
    """Extended thinking whose length the model decides."""

    type: Literal["adaptive"]
    display: ThinkingDisplay | None = None


class ThinkingDisabled(_Wire):
    type: Literal["disabled"]


ThinkingIn = Annotated[
    ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled, Field(discriminator="type")
]


class MetadataIn(_Wire):
    user_id: str | None = None


class OutputFormatIn(_Wire):
    """Structured outputs: the answer's text is JSON following ``schema``."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfigIn(_Wire):
    # ``effort`` is what chat calls ``reasoning_effort`` (sent to backends that take it).
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormatIn | None = None


class CountTokensIn(_Wire):
    """``POST /v1/messages/count_tokens``."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    # Extended thinking: to a remote model through litellm (Anthropic's take it as it is), as
    # ``think`` to an Ollama model that can think; a model with no such knob answers as it does.
    thinking: ThinkingIn | None = None
    output_config: OutputConfigIn | None = None
    # Prompt caching's automatic breakpoint: a hint to Anthropic's own cache, which no backend
    # behind the gateway takes (as on blocks and tools, accepted and not forwarded).
    cache_control: dict[str, Any] | None = None


# Each is looked for after every generated token: bounded, as chat's `stop` (4) is.
MAX_STOP_SEQUENCES = 64


class MessagesIn(CountTokensIn):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    metadata: MetadataIn | None = None
    stream: bool | None = None
    service_tier: str | None = None


# Where what other APIs send as a turn of these roles goes in Anthropic's.
ROLE_HINTS = {
    "system": "a system prompt goes in the top-level `system` field",
    "developer": "a system prompt goes in the top-level `system` field",
    "tool": "a tool's result goes in a `tool_result` block of a user turn",
}


def parse_messages(body: bytes) -> MessagesIn:
    return parse_as(MessagesIn, body, role_hints=ROLE_HINTS)


def parse_count_tokens(body: bytes) -> CountTokensIn:
    return parse_as(CountTokensIn, body, role_hints=ROLE_HINTS)


# --- translation ------------------------------------------------------------------------------


def chat_request(body: CountTokensIn, max_tokens_limit: int) -> ChatRequest:
    """The request as the pipeline takes it (Anthropic's turns as chat messages)."""
    messages: list[Message] = []
    system = _system(body.system)
    if system:
        messages.append(Message(role="system", content=system))
    called: set[str] = set()  # the ids of the tool_use blocks so far
    for i, turn in enumerate(body.messages):
        final_assistant = i == len(body.messages) - 1 and turn.role == "assistant"
        if not turn.content and not final_assistant:  # Anthropic's rule: a prefill may be empty
            raise BadRequest(
                f"messages[{i}].content: must not be empty (only a final assistant turn may be)",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
        messages.extend(_turn(turn, f"messages[{i}]", called))
    tools = tuple(
        Tool(name=t.name, description=t.description, parameters=t.input_schema, strict=t.strict)
        for t in body.tools or ()
    )
    output = body.output_config
    full = body if isinstance(body, MessagesIn) else None
    max_tokens = full.max_tokens if full is not None else None
    if max_tokens is not None:
        check_max_tokens(max_tokens, max_tokens_limit, "max_tokens")
    thinking = _thinking(body.thinking, max_tokens)
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=full.temperature if full else None,
        top_p=full.top_p if full else None,
        top_k=full.top_k if full else None,
        stop=_stop_sequences(full.stop_sequences) if full else (),
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice, tools),
        parallel_tool_calls=(
            False
            if body.tool_choice is not None and body.tool_choice.disable_parallel_tool_use
            else None
        ),
        user=full.metadata.user_id if full and full.metadata else None,
        thinking=thinking,
        response_format=_output_format(output.format if output else None),
        reasoning_effort=output.effort if output else None,
    )


def _stop_sequences(stops: list[str] | None) -> tuple[str, ...]:
    """Each must have something besides whitespace, as at Anthropic (an empty one would end
    every answer before its first token, or be dropped by a backend without a word)."""
    for i, stop in enumerate(stops or ()):
        if not stop.strip():
            raise BadRequest(
                f"stop_sequences[{i}]: each stop sequence must contain non-whitespace "
                f"characters; remove {stop!r}",
                param=f"stop_sequences[{i}]",
                code="invalid_value",
            )
    return tuple(stops or ())


def _output_format(fmt: OutputFormatIn | None) -> ResponseFormat | None:
    """Anthropic's structured outputs always follow the schema: a strict JSON schema format."""
    if fmt is None:
        return None
    return ResponseFormat(type="json_schema", schema=fmt.schema_, name="output", strict=True)


def _thinking(
    thinking: ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled | None, max_tokens: int | None
) -> Thinking | None:
    """The request's extended thinking; a budget must leave room for the answer (Anthropic's
    rule: ``budget_tokens`` below ``max_tokens``, which counts the thinking too)."""
    if thinking is None:
        return None
    if isinstance(thinking, ThinkingDisabled):
        return Thinking("disabled")
    if isinstance(thinking, ThinkingAdaptive):
        return Thinking("adaptive", display=thinking.display)
    budget = thinking.budget_tokens
    if max_tokens is not None and budget >= max_tokens:
        raise BadRequest(
            f"thinking.budget_tokens: {budget} must be less than max_tokens ({max_tokens}), "
            f"which counts the thinking too: lower budget_tokens or raise max_tokens",
            param="thinking.budget_tokens",
            code="invalid_value",
        )
    return Thinking("enabled", budget_tokens=budget, display=thinking.display)


def _system(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(block.text for block in system)


def _turn(turn: MessageIn, where: str, called: set[str]) -> list[Message]:
    """One Anthropic turn as chat messages: a user turn's ``tool_result`` blocks become
    ``tool`` messages (first, as they answer the previous turn's calls), the rest one message.
    ``called``: the ids of the earlier turns' ``tool_use`` blocks (this turn's are added); a
    result must answer one of them, as at Anthropic. A user turn's text block must hold more
    than whitespace, as at Anthropic (an assistant turn's need not: the gateway's own answers
    carry an empty text block when the model said nothing, and clients send them back)."""
    if isinstance(turn.content, str):
        return [Message(role=turn.role, content=turn.content)]
    texts: list[str] = []
    images: list[ImagePart] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    thinking: list[ThinkingBlock] = []
    for j, block in enumerate(turn.content):
        at = f"{where}.content[{j}]"
        if isinstance(block, TextBlock):
            if turn.role == "user" and not block.text.strip():
                # [{"type": "text", "text": ""}] is an empty turn too: the model would be asked
                # to answer nothing (Anthropic refuses it)
                raise BadRequest(
                    f"{at}.text: a text block must contain non-whitespace text; remove the "
                    f"block or put the text in it",
                    param=f"{at}.text",
                    code="invalid_value",
                )
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            source = block.source
            url = (
                source.url
                if isinstance(source, UrlSource)
                else f"data:{source.media_type};base64,{source.data}"
            )
            images.append(ImagePart(url=url))
        elif isinstance(block, ToolUseBlock):
            if turn.role != "assistant":
                raise _misplaced(at, "tool_use", "assistant")
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input)))
            called.add(block.id)
        elif isinstance(block, ToolResultBlock):
            if turn.role != "user":
                raise _misplaced(at, "tool_result", "user")
            if block.tool_use_id not in called:
                raise BadRequest(
                    f"{at}.tool_use_id: {block.tool_use_id!r} answers no tool_use block of an "
                    f"earlier assistant turn; send the tool_use turn first, or fix the id",
                    param=f"{at}.tool_use_id",
                    code="invalid_value",
                )
            content = block.content
            text = content if isinstance(content, str) or content is None else ""
            if isinstance(content, list):
                text = "\n".join(part.text for part in content)
            if block.is_error:
                text = f"(the tool failed) {text or ''}".strip()
            results.append(Message(role="tool", content=text or "", tool_call_id=block.tool_use_id))
        elif isinstance(block, ThinkingBlockIn | RedactedThinkingBlockIn):
            if turn.role != "assistant":
                raise _misplaced(at, block.type, "assistant")
            if isinstance(block, RedactedThinkingBlockIn):
                thinking.append(ThinkingBlock("redacted_thinking", data=block.data))
            elif block.signature:  # unsigned: a local model's, which nothing can verify
                thinking.append(ThinkingBlock("thinking", block.thinking, block.signature))
        else:
            raise BadRequest(
                f"{at}.type: content blocks of type {block.type!r} are not supported; send "
                f"text, image, tool_use, tool_result or (in assistant turns) thinking blocks",
                param=f"{at}.type",
                code="unsupported_content",
            )
    out = list(results)
    if texts or images or calls or thinking or not results:
        out.append(
            Message(
                role=turn.role,
                content="\n".join(texts),
                tool_calls=tuple(calls),
                images=tuple(images),
                thinking=tuple(thinking),
            )
        )
    return out


def _misplaced(at: str, kind: str, role: str) -> BadRequest:
    return BadRequest(
        f"{at}: a {kind} block belongs in a {role} turn",
        param=f"{at}.type",
        code="invalid_request",
    )


def _tool_choice(choice: ToolChoiceIn | None, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if choice.name is None:
            raise BadRequest(
                "tool_choice.name: required when tool_choice.type is 'tool'",
                param="tool_choice.name",
                code="missing",
            )
        if choice.name not in {t.name for t in tools}:
            raise BadRequest(
                f"tool_choice.name: {choice.name!r} is not one of the tools",
                param="tool_choice.name",
                code="invalid_value",
            )
        return ToolChoice(mode="function", name=choice.name)
    if choice.type == "any" and not tools:
        # Without tools the answer would be text, which `any` rules out.
        raise BadRequest(
            "tool_choice: {'type': 'any'} needs `tools`: send the tools the model must choose from",
            param="tool_choice",
            code="missing",
        )
    modes: dict[str, Literal["auto", "required", "none"]] = {
        "auto": "auto",
        "any": "required",
        "none": "none",
    }
    return ToolChoice(mode=modes[choice.type])

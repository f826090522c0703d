"""Anthropic's content blocks as requests carry them (``POST /v1/messages``): text, image,
``tool_use``, ``tool_result``, thinking sent back, and the kinds refused by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Block(BaseModel):
    # Clients echo an answer's blocks back as they got them, with fields newer than this
    # gateway (``caller``, ``citations``, ``cache_control`` for prompt caching): ignored.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class Base64Source(_Wire):
    type: Literal["base64"]
    media_type: str = Field(min_length=1)
    data: str = Field(min_length=1)


class UrlSource(_Wire):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None


class ThinkingBlockIn(_Block):
    """A thinking block of an earlier answer, sent back as it came (with its signature; a
    local model's has an empty one, and is dropped: no backend can verify it)."""

    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlockIn(_Block):
    type: Literal["redacted_thinking"]
    data: str = Field(min_length=1)


class OtherBlock(BaseModel):
    """Documents, server tools: accepted by the schema so the refusal names them."""

    model_config = ConfigDict(extra="allow")
    type: Literal["document", "server_tool_use", "search_result"]


Block = Annotated[
    TextBlock
    | ImageBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlockIn
    | RedactedThinkingBlockIn
    | OtherBlock,
    Field(discriminator="type"),
]

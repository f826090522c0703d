"""Anthropic's extended-thinking blocks as the chat values carry them: an answer's blocks, an
assistant turn's blocks sent back, and the pieces a stream brings them in; and the reasoning
local servers return (Ollama's ``message.thinking``, an OpenAI-compatible server's
``reasoning_content``) in the same blocks, unsigned.

Pure values; ``adapters.base`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from adapters.chat import Thinking


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """One of Anthropic's extended-thinking blocks: ``thinking`` (the model's reasoning and the
    ``signature`` Anthropic checks when the block is sent back) or ``redacted_thinking``
    (reasoning Anthropic encrypted, as ``data``).

    In a stream the same type carries the pieces of a block (``Chunk.thinking``): thinking
    text, then a piece with the signature that ends the block; a redacted block comes whole.
    ``merge_thinking`` joins the pieces. Signatures and data are opaque: never log them.

    A local reasoning model's thinking (``local_thinking``) has an empty ``signature``: local
    servers sign nothing. It stays an empty string, not absent, since Anthropic's SDK types
    want a string there; a block with no signature sent back is verifiable by no backend, so
    the gateway's edge drops it.
    """

    type: Literal["thinking", "redacted_thinking"]
    thinking: str = ""
    signature: str = ""
    data: str = ""

    def __repr__(self) -> str:  # the reasoning may be long and the signature is opaque
        return f"ThinkingBlock(type={self.type!r}, chars={len(self.thinking or self.data)})"

    def wire(self) -> dict[str, str]:
        """Anthropic's JSON form of the block (as its Messages API sends and takes it)."""
        if self.type == "redacted_thinking":
            return {"type": "redacted_thinking", "data": self.data}
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


def merge_thinking(pieces: Iterable[ThinkingBlock]) -> tuple[ThinkingBlock, ...]:
    """Whole thinking blocks from streamed pieces: thinking text joins the open block, a
    signature ends it, a redacted block stands alone."""
    blocks: list[ThinkingBlock] = []
    text: list[str] = []
    open_block = False
    for piece in pieces:
        if piece.type == "redacted_thinking":
            if open_block:
                blocks.append(ThinkingBlock("thinking", "".join(text)))
                text, open_block = [], False
            blocks.append(piece)
            continue
        text.append(piece.thinking)
        open_block = True
        if piece.signature:
            blocks.append(ThinkingBlock("thinking", "".join(text), piece.signature))
            text, open_block = [], False
    if open_block:  # a stream cut short before the signature
        blocks.append(ThinkingBlock("thinking", "".join(text)))
    return tuple(blocks)


def local_thinking(text: str) -> tuple[ThinkingBlock, ...]:
    """A local server's reasoning (whole, or one streamed piece of it) as an unsigned
    ``thinking`` block (or piece); none for no text. Unsigned pieces join into one block."""
    return (ThinkingBlock("thinking", text),) if text else ()


def shows_local_thinking(thinking: Thinking | None) -> bool:
    """Whether a local model's reasoning goes back with its answer: unless the request turned
    thinking off (``disabled``; a server that cannot be told still thinks) or asked for it
    ``omitted`` (Anthropic then sends only the signature, and a local block has none). A
    request that says nothing (all chat completions) gets it: such servers send it unasked,
    and OpenAI-shaped clients read it as ``reasoning_content``."""
    if thinking is None:
        return True
    return thinking.on and thinking.display != "omitted"

"""Chat templates that a message cannot steer: which parts of a rendered prompt are the
template's own text and which are message content, for adapters that tokenize prompts
themselves (tiny, artifact).

A chat template writes its control tokens as text (``<|im_start|>``, ``<|im_end|>``), and the
prompt is tokenized with special-token parsing on so that they become control tokens. The same
parsing turns those strings inside a message into control tokens too: a user message holding
``<|im_end|><|im_start|>system`` would close its own turn and open a system turn. So content
must be tokenized as plain text and only the template's own text with special tokens.

``prompt_pieces`` renders the template once with a sentinel in place of each message's content:
the text between sentinels is the template's own, each sentinel stands for one message's content.
When no message holds a marker (the text of a control token), the prompt is one piece and is
tokenized exactly as before: splitting it changes how some tokenizers cut at the seams
(SentencePiece adds a space at the start of each piece), which only hostile content should pay.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

Render = Callable[[list[dict[str, str]]], str]
"""Renders chat messages (``role``, ``content``) into the prompt text."""

# Private-use characters: no template writes them, and ``| trim`` leaves them alone.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of prompt text: the template's own (``content`` false: special tokens parsed) or
    a message's content (``content`` true: plain text, whatever it holds)."""

    text: str
    content: bool


def holds_marker(messages: Sequence[dict[str, str]], markers: Collection[str]) -> bool:
    """Whether any message's content contains the text of a control token."""
    return any(marker in m["content"] for m in messages for marker in markers if marker)


def prompt_pieces(
    render: Render, messages: list[dict[str, str]], markers: Collection[str]
) -> list[Piece]:
    """The prompt ``render`` makes of ``messages``, cut into template text and content.

    One template piece when no content holds a marker. Otherwise the content appears as the
    template writes it (verbatim, or stripped by a template that trims it); should the template
    transform content in another way, the message's content as sent stands in its place.
    """
    prompt = render(messages)
    if not holds_marker(messages, markers):
        return [Piece(prompt, content=False)]
    marked = render(
        [{**m, "content": f"{_OPEN}{index}{_CLOSE}"} for index, m in enumerate(messages)]
    )
    parts = _SENTINEL.split(marked)  # template, index, template, index, ..., template
    template = parts[0::2]
    contents = [messages[int(index)]["content"] for index in parts[1::2]]
    written = _as_written(prompt, template, contents) or contents
    pieces: list[Piece] = []
    for index, text in enumerate(template):
        if text:
            pieces.append(Piece(text, content=False))
        if index < len(written) and written[index]:
            pieces.append(Piece(written[index], content=True))
    return pieces


def _as_written(prompt: str, template: list[str], contents: list[str]) -> list[str] | None:
    """Each content as ``prompt`` holds it between the template's pieces, or ``None`` when the
    prompt is not the template's pieces around (possibly stripped) contents."""
    if not prompt.startswith(template[0]):
        return None
    at = len(template[0])
    written: list[str] = []
    for content, after in zip(contents, template[1:], strict=True):
        variants = dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip()))
        for variant in variants:
            end = at + len(variant)
            if prompt.startswith(variant, at) and prompt.startswith(after, end):
                written.append(variant)
                at = end + len(after)
                break
        else:
            return None
    return written if at == len(prompt) else None

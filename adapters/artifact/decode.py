"""Token ids to text, one token at a time, without torch.

Decoding each token alone is wrong for byte-level tokenizers: a character split over two tokens
decodes as U+FFFD, and tokenizers that join words with spaces lose them. So the text of a
window of recent tokens is decoded and only what it adds over the window's earlier part is
released (the offsets scheme vLLM and transformers' TextStreamer use), holding back text that
ends in an incomplete character. Joined, the pieces equal decoding all the ids at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Feed token ids with ``add``; each call returns the text that became final."""

    __slots__ = ("_decode", "_ids", "_prefix", "_read")

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # tokens before this are released as text

    def add(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before) :]
        return ""

    def flush(self) -> str:
        """What is still held back (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return now[len(before) :]

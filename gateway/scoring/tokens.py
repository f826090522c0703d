"""Token counting with tiktoken, offline (its encodings ship inside litellm; see
``adapters._offline``).

Counting is on the request path, so long texts are counted exactly up to ``EXACT_CHARS`` and
extrapolated beyond that from the measured characters-per-token of the counted part: within a
few percent on prose and code, and bounded in time. Callers that need an exact figure (a
context-window check close to the limit) use ``count_exact``.
"""

from __future__ import annotations

from functools import cache
from typing import Protocol

from adapters._offline import prepare_offline_env

ENCODING = "o200k_base"
EXACT_CHARS = 2048


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@cache
def _encoding() -> _Encoding:
    prepare_offline_env()
    import tiktoken

    encoding: _Encoding = tiktoken.get_encoding(ENCODING)
    return encoding


def encode(text: str) -> list[int]:
    """The o200k_base tokens of ``text``."""
    return _encoding().encode_ordinary(text) if text else []


def count_exact(text: str) -> int:
    """Exact tokens of ``text`` in o200k_base."""
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


def count_fast(text: str) -> int:
    """Tokens of ``text``: exact for short texts, extrapolated past ``EXACT_CHARS``."""
    n = len(text)
    if n <= EXACT_CHARS:
        return count_exact(text)
    head = count_exact(text[:EXACT_CHARS])
    return max(1, round(head * n / EXACT_CHARS))


def warm_up() -> None:
    """Load the encoding now (a few hundred ms) rather than on the first request."""
    count_exact("warm up")

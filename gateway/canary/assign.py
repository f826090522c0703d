"""Sticky arm assignment: a pure function of the canary's name and the caller's key.

``sha256(name + "\\0" + key)`` read as a number in [0, 1): the same key lands on the same arm in
every process, replica and restart (Python's ``hash()`` would change with PYTHONHASHSEED), and a
new canary name reshuffles who is in the candidate arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from gateway.policy.canary import StickySpec

_SCALE = float(1 << 64)


def bucket(name: str, key: str) -> float:
    """Where ``key`` falls in [0, 1) for the canary ``name``."""
    digest = hashlib.sha256(f"{name}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_candidate(name: str, key: str, percent: float) -> bool:
    """Whether ``key`` is in the candidate arm of a split taking ``percent`` of the keys."""
    return bucket(name, key) < percent / 100.0


def sticky_key(
    sticky: StickySpec, *, key_id: str, user: str | None, headers: Mapping[str, str]
) -> str:
    """The value that keeps one caller on one arm. A request without the configured field
    (no ``user``, no header) falls back to its API key id."""
    if sticky.by == "user" and user:
        return f"user:{user}"
    if sticky.by == "header" and sticky.header is not None:
        value = headers.get(sticky.header.lower())
        if value:
            return f"header:{value}"
    return f"key:{key_id}"

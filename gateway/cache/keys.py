"""Cache keys, pure functions.

A response key covers everything that changes the answer — the route, the messages (role, name,
content), every sampling parameter, and any extra request fields that shape the answer (tools,
response format) — in a canonical encoding, so the same request always maps to the same key
whatever order its JSON came in, and any difference that matters gives another key.

A prefix key names a whole prompt prefix: the prompt's tokens are cut into fixed blocks and each
block's hash is chained to the previous one, so the i-th hash stands for the first i blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from adapters.base import ChatRequest, Message
from gateway.scoring.tokens import encode

# v2: the penalties joined the key; v3: reasoning_effort; v4: Anthropic's thinking
KEY_VERSION = b"v4"


def response_key(
    route: str,
    request: ChatRequest,
    *,
    extra: Mapping[str, Any] | None = None,
    key_id: str | None = None,
) -> str:
    """The exact-response cache key. ``key_id`` isolates one scope's entries (``key:<id>`` or
    ``team:<name>``; None: shared by every caller)."""
    canonical = {
        "route": route,
        "messages": [[m.role, m.name, m.content] for m in request.messages],
        "max_tokens": request.max_tokens,
        # 0 and 0.0 are the same temperature (orjson would write them apart).
        "temperature": _number(request.temperature),
        "top_p": _number(request.top_p),
        "top_k": request.top_k,
        # Generation ends at the first of the stop sequences, whichever order they came in.
        "stop": sorted(set(request.stop)),
        "seed": request.seed,
        "presence_penalty": _number(request.presence_penalty),
        "frequency_penalty": _number(request.frequency_penalty),
        # A reasoning model answers differently (and at another cost) with more effort.
        "reasoning_effort": request.reasoning_effort,
        # So does a model that thinks first, or with another budget, or not at all.
        "thinking": request.thinking.wire() if request.thinking is not None else None,
        "extra": dict(extra or {}),
        "key": key_id,
    }
    digest = hashlib.blake2b(
        KEY_VERSION + orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=20
    )
    return "r:" + digest.hexdigest()


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def deterministic(request: ChatRequest) -> bool:
    """Whether the same request gives the same answer: greedy (temperature 0) or seeded. A
    negative seed is no seed (llama.cpp reads -1 as "random"; the HTTP edge drops them)."""
    return request.temperature == 0 or (request.seed is not None and request.seed >= 0)


def prompt_text(messages: Sequence[Message]) -> str:
    """The conversation as one text, the way prefixes are compared (roles included)."""
    return "".join(f"<|{m.role}|>{m.content}\n" for m in messages)


def prefix_hashes(
    messages: Sequence[Message],
    *,
    block_tokens: int,
    max_blocks: int = 128,
    scope: str | None = None,
) -> list[str]:
    """Chained hashes of the prompt's full token blocks, shortest prefix first; within
    ``scope`` (a team's or key's: another scope's hashes differ; None: shared)."""
    tokens = encode(prompt_text(messages))
    blocks = min(len(tokens) // block_tokens, max_blocks)
    hashes: list[str] = []
    previous = b"" if scope is None else hashlib.blake2b(scope.encode(), digest_size=16).digest()
    for i in range(blocks):
        block = tokens[i * block_tokens : (i + 1) * block_tokens]
        digest = hashlib.blake2b(
            previous + b"".join(t.to_bytes(4, "little") for t in block), digest_size=16
        ).digest()
        hashes.append("p:" + digest.hex())
        previous = digest
    return hashes

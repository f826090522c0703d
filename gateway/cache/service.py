"""The caches the request path uses: exact answers, and where prompt prefixes are warm.

What is cached where:

* **answers** (the exact response cache): in the store (Redis, or in-process), keyed by
  ``keys.response_key``; a hit is answered without any backend.
* **prefix locations** (the prefix registry): in the store, per prefix hash, which replica
  served it and when. Only *where* a prefix is warm is shared, never the model state itself:
  a KV cache is tied to one model on one box, is megabytes per prompt, and is only useful on
  the box that holds it, so the gateway sends the request there instead of moving the state.
* **model state** for shared prefixes: inside the tiny backend's process (``adapters.tiny``),
  and on each local server (Ollama and llama.cpp keep their own).

Writes never delay a response: they run as background tasks, bounded in number.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import structlog

from adapters.base import Completion, FinishReason, ThinkingBlock, Timings, Usage
from gateway.cache.affinity import warm_prefixes
from gateway.cache.store import Store
from gateway.metrics import Metrics

log = structlog.get_logger("tiergate.cache")

MAX_PENDING_WRITES = 1000


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer as the cache keeps it, with where it came from and what it cost then."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    tier: str
    backend: str
    cost_usd: Decimal | None
    stop_sequence: str | None = None  # the stop string that ended it, when the backend said
    # Its extended-thinking blocks, signatures included, so a hit replays them as they came
    # (a client sends them back on the next turn, and Anthropic checks the signatures).
    thinking: tuple[ThinkingBlock, ...] = ()

    def completion(self, latency_ms: float) -> Completion:
        return Completion(
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            timings=Timings(latency_ms=latency_ms, ttft_ms=latency_ms),
            backend="cache",
            model=self.model,
            stop_sequence=self.stop_sequence,
            thinking=self.thinking,
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "text": self.text,
                "finish_reason": self.finish_reason,
                "usage": [
                    self.usage.prompt_tokens,
                    self.usage.completion_tokens,
                    self.usage.cached_tokens,
                ],
                "model": self.model,
                "tier": self.tier,
                "backend": self.backend,
                "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
                "stop_sequence": self.stop_sequence,
                "thinking": [block.wire() for block in self.thinking],
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        try:
            data = orjson.loads(raw)
            prompt, completion, cached = data["usage"]
            cost = data["cost_usd"]
            stop = data.get("stop_sequence")  # absent from entries written before it was kept
            return cls(
                text=str(data["text"]),
                finish_reason=data["finish_reason"],
                usage=Usage(int(prompt), int(completion), int(cached)),
                model=str(data["model"]),
                tier=str(data["tier"]),
                backend=str(data["backend"]),
                cost_usd=None if cost is None else Decimal(cost),
                stop_sequence=stop if isinstance(stop, str) else None,
                thinking=tuple(_thinking_block(b) for b in data.get("thinking") or ()),
            )
        except (ValueError, KeyError, TypeError, ArithmeticError):
            return None  # a corrupt or foreign entry is a miss, not an error


def _thinking_block(data: dict[str, str]) -> ThinkingBlock:
    if data["type"] == "redacted_thinking":
        return ThinkingBlock("redacted_thinking", data=str(data["data"]))
    if data["type"] != "thinking":
        raise ValueError(f"not a thinking block: {data['type']!r}")
    return ThinkingBlock("thinking", str(data["thinking"]), str(data["signature"]))


class CacheService:
    def __init__(self, store: Store, metrics: Metrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def store(self) -> Store:
        return self._store

    async def lookup(self, key: str) -> CachedAnswer | None:
        raw = await self._store.get(key)
        answer = CachedAnswer.decode(raw) if raw is not None else None
        if self._metrics is not None:
            self._metrics.cache_lookups.labels("hit" if answer else "miss").inc()
        return answer

    def remember(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        self._background(self._store.set(key, answer.encode(), ttl_s))

    async def warm_tokens(
        self, hashes: Sequence[str], replicas: list[str], *, block_tokens: int, ttl_s: float
    ) -> dict[str, int]:
        stamps = await self._store.stamps(hashes)
        return warm_prefixes(
            stamps, replicas, block_tokens=block_tokens, now=time.time(), ttl_s=ttl_s
        )

    def served(self, hashes: Sequence[str], backend: str, ttl_s: float) -> None:
        if hashes:
            self._background(self._store.stamp(hashes, backend, ttl_s))

    def routed(self, warm: bool) -> None:
        """Count a request sent to a replica of a multi-replica tier, warm prefix or not."""
        if self._metrics is not None:
            self._metrics.prefix_routed.labels("warm" if warm else "cold").inc()

    async def flush(self) -> None:
        """Wait for the writes started so far (tests, benchmarks: "the answer is stored")."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            work.close()  # the store is too slow to keep up: skip this write, it is a cache
            return
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=1.0)
        for task in list(self._pending):
            task.cancel()
        await self._store.aclose()

"""The adaptive scorer's live side: the labels in memory, kept in step with the ledger database
so every replica routes the same way, and the score of one request.

Each replica holds a ``LabelIndex`` and refreshes it every ``refresh_s`` from
``adaptive_labels``: the rows past the last id it saw (and, on PostgreSQL, the ids it saw
skipped: a concurrent transaction may commit a lower id after a higher one was read; those are
asked for again for a while). Scoring never waits for the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import structlog
from sqlalchemy import Engine

from adapters.base import Message
from gateway.ledger.adaptive import StoredLabel, prune_samples, read_labels
from gateway.scoring.adaptive import (
    DEFAULT_MAX_LABELS,
    AdaptiveSettings,
    LabelIndex,
    adapted,
    pack,
    text_of,
    unpack,
)
from gateway.scoring.embedding import embed
from gateway.scoring.heuristic import Score

log = structlog.get_logger("tiergate.adaptive")

_BATCH = 5000
_GAP_READS = 30  # how many refreshes a skipped id is asked for again
_MAX_GAP = 256  # a larger jump is ids burnt by rollbacks, not transactions still open
_PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """What the ledger keeps of an adaptively scored request, if a cheaper tier answers it."""

    embedding: bytes  # packed: 256 float16, never the text
    base: float  # the base scorer's score
    top_tier: str  # the route's strongest tier: feedback on its answers labels nothing


class AdaptiveLayer:
    """One per process: the labels every request's score consults."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_labels: int = DEFAULT_MAX_LABELS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.index = LabelIndex(max_labels)
        self._engine = engine
        self._clock = clock
        self._now = now
        self._last_id = 0
        self._gaps: dict[int, int] = {}  # skipped id -> reads left
        self._lock = asyncio.Lock()
        self._pruned_at: float | None = None

    @property
    def last_id(self) -> int:
        return self._last_id

    def score(
        self,
        base: Score,
        messages: Sequence[Message],
        settings: AdaptiveSettings,
        owner: str | None = None,
    ) -> tuple[Score, bytes]:
        """``base`` pulled toward the labels of the request's nearest neighbours (the shared
        ones and, unless feedback is shared, its tenant ``owner``'s), and the request's packed
        embedding."""
        vector = embed(text_of(messages))
        estimate = self.index.estimate(vector, base.value, settings, owner)
        return adapted(base, estimate), pack(vector)

    async def refresh(self, max_labels: int | None = None) -> int:
        """Read the labels added since the last refresh; returns how many were new."""
        if max_labels is not None:
            self.index.max_labels = max_labels
        added = 0
        async with self._lock:
            while True:
                rows = await asyncio.to_thread(
                    read_labels, self._engine, self._last_id, tuple(self._gaps), _BATCH
                )
                added += self._apply(rows)
                if len(rows) < _BATCH:
                    break
            for gap in list(self._gaps):
                self._gaps[gap] -= 1
                if self._gaps[gap] <= 0:
                    del self._gaps[gap]
        return added

    def _apply(self, rows: list[StoredLabel]) -> int:
        if not rows:
            return 0
        for row in rows:
            self._gaps.pop(row.id, None)
            if row.id > self._last_id:
                skipped = range(max(self._last_id + 1, row.id - _MAX_GAP), row.id)
                self._gaps.update(dict.fromkeys(skipped, _GAP_READS))
                self._last_id = row.id
        vectors = np.stack([unpack(r.embedding) for r in rows])
        return self.index.add(
            [r.id for r in rows],
            vectors,
            [r.label for r in rows],
            [r.owner for r in rows],
            [r.slot for r in rows],
        )

    async def prune(self, ttl_h: float) -> int:
        """Forget stored embeddings older than ``ttl_h`` hours (at most once an hour)."""
        if self._pruned_at is not None and self._clock() - self._pruned_at < _PRUNE_EVERY_S:
            return 0
        self._pruned_at = self._clock()
        before = self._now() - timedelta(hours=ttl_h)
        return await asyncio.to_thread(prune_samples, self._engine, before)

    async def run(self, settings_of: Callable[[], AdaptiveSettings | None]) -> None:
        """Refresh (and prune) for as long as the process serves; idle while the active policy
        is not adaptive."""
        while True:
            settings = settings_of()
            if settings is not None:
                try:
                    await self.refresh(settings.max_labels)
                    await self.prune(settings.sample_ttl_h)
                except Exception as exc:  # the database may be away: keep the labels we have
                    log.warning("adaptive_refresh_failed", error=str(exc).splitlines()[0][:300])
            await asyncio.sleep(settings.refresh_s if settings is not None else 5.0)

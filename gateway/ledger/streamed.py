"""A streamed answer's progress as the write-ahead journal keeps it (``gateway.ledger.journal``):
the output tokens sent to the client so far and what the request costs with them, one short line
(``{"streamed": id, ...}``) after the stream's opening entry (its interrupted row). A process
killed mid-stream leaves both; recovery (``journal_recovery``) makes the interrupted row of the
two, so it bills the output the client had received, not the prompt alone. The pipeline writes
them, coalesced (``gateway.pipeline.progress``); the request's real row, once written, wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from gateway.ledger.entry import LedgerEntry

STREAMED = "streamed"  # the field naming a progress line's request


@dataclass(frozen=True, slots=True)
class Streamed:
    """How far request ``rid``'s stream had got: ``completion_tokens`` sent (every choice's,
    counted with the gateway's tokenizer), and the request priced with them and the prompt's
    estimated tokens, ``latency_ms`` after it arrived."""

    rid: str
    completion_tokens: int
    latency_ms: float
    cost_usd: Decimal | None
    cost_source: str
    baseline_cost_usd: Decimal | None

    def line(self) -> bytes:
        """One journal line (``read`` reads it back)."""
        cost, baseline = self.cost_usd, self.baseline_cost_usd
        return (
            orjson.dumps(
                {
                    STREAMED: self.rid,
                    "completion_tokens": self.completion_tokens,
                    "latency_ms": self.latency_ms,
                    "cost_usd": None if cost is None else str(cost),
                    "cost_source": self.cost_source,
                    "baseline_cost_usd": None if baseline is None else str(baseline),
                }
            )
            + b"\n"
        )

    @classmethod
    def read(cls, data: dict[str, Any]) -> Streamed:
        """The progress a journal line holds (raises KeyError, TypeError or ValueError on a
        malformed one)."""
        cost, baseline = data["cost_usd"], data["baseline_cost_usd"]
        return cls(
            rid=str(data[STREAMED]),
            completion_tokens=int(data["completion_tokens"]),
            latency_ms=float(data["latency_ms"]),
            cost_usd=None if cost is None else Decimal(cost),
            cost_source=str(data["cost_source"]),
            baseline_cost_usd=None if baseline is None else Decimal(baseline),
        )

    def applied(self, opening: LedgerEntry) -> LedgerEntry:
        """The stream's interrupted row (``opening``, journaled as its try began) as it stands
        with this progress: the streamed tokens added to the completion it had (none, or a
        buffered cascade's discarded first answer), the cost and latency these say, still
        flagged estimated."""
        return dataclasses.replace(
            opening,
            completion_tokens=opening.completion_tokens + self.completion_tokens,
            latency_ms=max(opening.latency_ms, self.latency_ms),
            cost_usd=self.cost_usd,
            cost_source=self.cost_source,
            baseline_cost_usd=self.baseline_cost_usd,
            usage_estimated=True,
        )

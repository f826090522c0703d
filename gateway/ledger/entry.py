"""A ledger entry as the request path builds it: a frozen value, turned into a row later by
the writer (and into JSON for the outbox)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

_MONEY = ("cost_usd", "baseline_cost_usd", "cache_saved_usd", "cascade_cost_usd")
_NAMES: dict[type, tuple[str, ...]] = {}  # each entry class's field names, in order


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    ts: datetime
    key_id: str
    policy_hash: str
    route: str
    tier: str
    backend: str
    model: str
    score: float | None
    cache: str
    canary_arm: str | None
    status: int
    error_class: str | None
    attempts: int
    fallback_chain: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    usage_estimated: bool
    latency_ms: float
    ttft_ms: float | None
    server_ms: float | None
    load_ms: float | None
    cost_usd: Decimal | None
    cost_source: str
    baseline_cost_usd: Decimal | None
    cache_saved_usd: Decimal | None = None  # a cache hit: what the answer cost when it was made
    capabilities: str = ""  # what the request needed, comma-separated (tools, json, vision, …)
    quality: float | None = None  # a shadow call: its answer compared with the stable one, 0-1
    features: str | None = None  # the v1 scorer's non-zero features, JSON (for policy replay)
    # A confidence cascade's decision (kept | escalated | unescalated), the cheap answer's
    # calibrated confidence, and its call's cost and tokens (inside cost_usd and the totals).
    cascade: str | None = None
    cascade_confidence: float | None = None
    cascade_cost_usd: Decimal | None = None
    cascade_prompt_tokens: int | None = None
    cascade_completion_tokens: int | None = None
    api: str | None = None  # the wire format: chat, completions, embeddings, messages, responses
    team: str | None = None  # the caller's team (virtual keys)
    budget: str | None = None  # stepped-down: a budget moved it to a cheaper tier
    # The baseline model baseline_cost_usd was priced at (a window can span policy changes).
    baseline_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe (the outbox and the journal store entries as JSON text). Field by field,
        not ``dataclasses.asdict``: the journal writes one per request, and asdict's deep copy
        cost ten times more."""
        names = _NAMES.get(type(self))
        if names is None:
            names = _NAMES[type(self)] = tuple(f.name for f in fields(self))
        out = {name: getattr(self, name) for name in names}
        out["ts"] = self.ts.isoformat()
        for key in _MONEY:
            value = out[key]
            out[key] = None if value is None else str(value)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEntry:
        values = dict(data)
        values["ts"] = datetime.fromisoformat(values["ts"])
        for key in _MONEY:
            if values.get(key) is not None:
                values[key] = Decimal(values[key])
        kind: type[LedgerEntry] = cls
        if values.get("embedding") is not None:
            kind = SampledEntry
            values["embedding"] = base64.b64decode(values["embedding"])
        names = {f.name for f in fields(kind)}
        return kind(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True, slots=True)
class SampledEntry(LedgerEntry):
    """A ledger entry of a request the adaptive scorer routed to a cheaper tier: also the
    prompt's embedding (never its text), written to ``adaptive_samples`` with the row, so
    that feedback on the answer can become a label."""

    embedding: bytes = b""
    base_score: float | None = None  # the base scorer's score, before the neighbours' pull

    def to_json(self) -> dict[str, Any]:
        out = LedgerEntry.to_json(self)
        out["embedding"] = base64.b64encode(self.embedding).decode()
        return out

"""Plausible ledger entries for tests that fill a ledger by hand: every field has a default,
a test names only what it is about."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import RequestRow

DEFAULTS: dict[str, Any] = {
    "ts": datetime(2026, 1, 1, tzinfo=UTC),
    "key_id": "k",
    "policy_hash": "h",
    "route": "auto",
    "tier": "cheap",
    "backend": "small",
    "model": "m",
    "score": 0.1,
    "cache": "miss",
    "canary_arm": None,
    "status": 200,
    "error_class": None,
    "attempts": 1,
    "fallback_chain": "small",
    "stream": False,
    "prompt_tokens": 10,
    "completion_tokens": 10,
    "cached_tokens": 0,
    "usage_estimated": False,
    "latency_ms": 1.0,
    "ttft_ms": None,
    "server_ms": None,
    "load_ms": None,
    "cost_usd": None,
    "cost_source": "policy",
    "baseline_cost_usd": None,
}


def ledger_entry(id: str, **fields: Any) -> LedgerEntry:
    """An entry with ``id``; ``fields`` override the defaults."""
    return LedgerEntry(id=id, **{**DEFAULTS, **fields})


def request_row(id: str, **fields: Any) -> RequestRow:
    """The same, as an ORM row (for a ``Session``)."""
    return RequestRow(**dataclasses.asdict(ledger_entry(id, **fields)))

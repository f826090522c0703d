"""Prometheus metrics, one registry per app (so tests and several apps in a process never
share counters). Under ``serve --workers N`` the values live in prometheus_client's multiprocess
directory and a scrape sums every worker's."""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SCORER_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """``key_labels``: the token and cost counters also by key id (unbounded with many keys, so
    off unless asked: ``TIERGATE_METRICS_KEY_LABELS``)."""

    def __init__(self, *, key_labels: bool = False) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.key_labels = key_labels
        self.registry = CollectorRegistry()
        r = self.registry
        live: Final = "livemax"  # gauges across workers: the highest among live workers
        self.requests = Counter(
            "tiergate_requests",
            "Requests answered, by route, tier, backend and HTTP status.",
            ["route", "tier", "backend", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tiergate_request_duration_seconds",
            "Wall time from request to last byte.",
            ["route", "tier", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds",
            "Wall time from request to the first generated text.",
            ["route", "tier", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        spent = ["route", "tier", "backend", *(["key"] if key_labels else [])]
        self.tokens = Counter(
            "tiergate_tokens",
            "Tokens by route, tier, backend and kind: input (prompt, cached part included), "
            "output, cached (the part of input a prompt cache served).",
            [*spent, "kind"],
            registry=r,
        )
        self.cost = Counter(
            "tiergate_cost_usd",
            "What answered requests cost in USD (0 for a cache hit), by route, tier and backend.",
            spent,
            registry=r,
        )
        self.baseline_cost = Counter(
            "tiergate_baseline_cost_usd",
            "What the same requests would have cost on the policy's baseline model (USD); "
            "savings = baseline − cost.",
            spent,
            registry=r,
        )
        self.fallbacks = Counter(
            "tiergate_fallbacks",
            "Attempts that failed and passed the request on to the next candidate, which was then "
            "tried (a request's last failure is not counted).",
            ["route", "backend", "error"],
            registry=r,
        )
        self.retries = Counter(
            "tiergate_retries",
            "Tries that re-sent a request to the same backend, by why (rate_limited: a 429; "
            "server_error: a 5xx).",
            ["backend", "reason"],
            registry=r,
        )
        self.governance = Counter(
            "tiergate_governance",
            "Requests a key's limits acted on: rate_limit_exceeded, budget_exceeded and "
            "route_not_allowed refused them; stepped_down sent them to a cheaper tier.",
            ["route", "outcome"],
            registry=r,
        )
        self.scorer = Histogram(
            "tiergate_scorer_duration_seconds",
            "Time spent scoring a request's complexity.",
            buckets=SCORER_BUCKETS,
            registry=r,
        )
        self.backend_up = Gauge(
            "tiergate_backend_up",
            "1 when the backend may take requests (enabled, healthy), else 0.",
            ["backend"],
            registry=r,
            multiprocess_mode=live,
        )
        self.breaker = Gauge(
            "tiergate_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
            multiprocess_mode=live,
        )
        self.policy_reloads = Counter(
            "tiergate_policy_reloads",
            "Policy reload attempts by result (applied, rejected, unchanged).",
            ["result", "trigger"],
            registry=r,
        )
        self.policy_reload_ok = Gauge(
            "tiergate_policy_reload_ok",
            "0 while the last reload was rejected (the file on disk is invalid and the last good "
            "policy serves), else 1; with --workers N, 0 if any worker's was.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.policy_info = Gauge(
            "tiergate_policy_info",
            "The active policy (value 1).",
            ["hash"],
            registry=r,
            multiprocess_mode=live,
        )

        self.ledger_queue = Gauge(
            "tiergate_ledger_queue_rows",
            "Ledger rows waiting to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_outbox = Gauge(
            "tiergate_ledger_outbox_rows",
            "Ledger rows in the local outbox, waiting for the database.",
            registry=r,
            multiprocess_mode=live,
        )
        self.ledger_outbox_bytes = Gauge(
            "tiergate_ledger_outbox_bytes",
            "Bytes the local outbox's file has in use (waiting rows and their indexes).",
            registry=r,
            multiprocess_mode=live,
        )
        self.ledger_outbox_rejected = Gauge(
            "tiergate_ledger_outbox_rejected_rows",
            "Ledger rows the database refused for their content, kept in the outbox for a "
            "person (tiergate outbox list / retry / drop); they count toward its bound.",
            registry=r,
            multiprocess_mode=live,
        )
        self.ledger_outbox_limit = Gauge(
            "tiergate_ledger_outbox_limit_bytes",
            "TIERGATE_OUTBOX_MAX_BYTES: at this many bytes in the outbox new requests are "
            "refused (503 ledger_outbox_full) until the database answers.",
            registry=r,
            multiprocess_mode=live,
        )
        self.ledger_outbox_refused = Counter(
            "tiergate_ledger_outbox_refused",
            "Requests refused because the ledger database was unreachable and the local "
            "outbox full.",
            registry=r,
        )
        self.ledger_journal = Gauge(
            "tiergate_ledger_journal_rows",
            "Ledger rows in the local write-ahead journal, not yet in the database or outbox.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_journal_age = Gauge(
            "tiergate_ledger_journal_oldest_seconds",
            "Age of the oldest row in the write-ahead journal (0 when empty): a database that "
            "stopped taking rows shows here first.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ledger_rows = Counter(
            "tiergate_ledger_rows",
            "Ledger rows written, by destination (db, outbox, replayed from the outbox).",
            ["dest"],
            registry=r,
        )
        self.ledger_errors = Counter(
            "tiergate_ledger_write_errors",
            "Failed attempts to write to the ledger database.",
            registry=r,
        )

        self.cache_lookups = Counter(
            "tiergate_cache_lookups",
            "Exact response cache lookups, by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.prefix_routed = Counter(
            "tiergate_prefix_routed",
            "Requests sent to a replica of a multi-replica tier, by whether it held a warm "
            "prefix of the prompt (warm, cold).",
            ["result"],
            registry=r,
        )

    def set_policy(self, new: str, old: str | None = None) -> None:
        if old is not None:
            if self.multiprocess:
                self.policy_info.labels(old).set(0)  # files cannot forget a label
            else:
                self.policy_info.remove(old)
        self.policy_info.labels(new).set(1)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def close(self) -> None:
        """A worker leaving: its live gauges stop counting."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

"""The canary's Prometheus series, on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class CanaryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.shadow = Counter(
            "tiergate_canary_shadow",
            "Shadow calls by outcome: compared, failed, dropped (queue full), judge_rate_limited.",
            ["canary", "outcome"],
            registry=registry,
        )
        self.decisions = Counter(
            "tiergate_canary_decisions",
            "Canary decisions taken by this process: start, ready, promote, rollback, pause.",
            ["canary", "action"],
            registry=registry,
        )

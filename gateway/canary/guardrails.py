"""The guardrails' verdict: a pure function of the spec, the figures per arm and the time.

* Nothing is judged before the candidate has ``min_samples`` requests: one early error would
  otherwise be an error rate of 100 %.
* From then on a breach (error rate, p95 latency ratio against the stable arm, quality) rolls
  back at once, whatever the time.
* Passing needs ``min_duration_s`` since the start as well; then ``on_pass`` says whether to
  promote or to wait for a manual promote (``ready``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gateway.canary.arms import ArmFigures
from gateway.policy.canary import CanarySpec

Outcome = Literal["wait", "rollback", "ready", "promote"]


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    numbers: dict[str, Any]


def candidate_arm(spec: CanarySpec) -> str:
    return "candidate" if spec.mode == "split" else "shadow"


def evaluate(
    spec: CanarySpec,
    figures: dict[str, ArmFigures],
    *,
    started: datetime,
    now: datetime,
) -> Verdict:
    rails = spec.guardrails
    cand, stable = figures[candidate_arm(spec)], figures["stable"]
    elapsed = max(0.0, (now - started).total_seconds())
    ratio = (
        round(cand.latency_ms_p95 / stable.latency_ms_p95, 4)
        if cand.latency_ms_p95 is not None and stable.latency_ms_p95
        else None
    )
    numbers: dict[str, Any] = {
        "arms": {arm: f.as_dict() for arm, f in figures.items()},
        "latency_p95_ratio": ratio,
        "elapsed_s": round(elapsed, 3),
        "guardrails": rails.model_dump(),
    }

    def verdict(outcome: Outcome, reason: str) -> Verdict:
        return Verdict(outcome, reason, numbers)

    if cand.requests < rails.min_samples:
        return verdict("wait", f"{cand.requests} of {rails.min_samples} candidate samples so far")
    error_rate = cand.error_rate or 0.0
    if error_rate > rails.max_error_rate:
        return verdict(
            "rollback",
            f"error rate {error_rate:.2%} > max_error_rate {rails.max_error_rate:.2%} over "
            f"{cand.requests} candidate requests ({cand.errors} errors)",
        )
    if ratio is not None and ratio > rails.max_latency_p95_ratio:
        return verdict(
            "rollback",
            f"p95 latency {cand.latency_ms_p95:.0f} ms is {ratio:.2f}x the stable "
            f"{stable.latency_ms_p95:.0f} ms > max_latency_p95_ratio {rails.max_latency_p95_ratio}",
        )
    if rails.min_quality is not None:
        if cand.quality is None:
            return verdict("wait", "no quality signal yet (shadow comparisons or feedback)")
        if cand.quality < rails.min_quality:
            return verdict(
                "rollback",
                f"quality {cand.quality:.3f} < min_quality {rails.min_quality} over "
                f"{cand.quality_samples} signals",
            )
    if ratio is None:
        return verdict("wait", "no stable latency to compare with yet")
    if elapsed < rails.min_duration_s:
        left = rails.min_duration_s - elapsed
        return verdict("wait", f"guardrails pass; {left:.0f} s of min_duration_s left")
    summary = (
        f"guardrails passed over {cand.requests} candidate requests in {elapsed:.0f} s: error "
        f"rate {error_rate:.2%}, p95 ratio {ratio:.2f}"
        + (f", quality {cand.quality:.3f}" if cand.quality is not None else "")
    )
    if spec.on_pass == "promote":
        return verdict("promote", summary)
    return verdict("ready", summary + "; on_pass: wait — promote with `tiergate canary promote`")

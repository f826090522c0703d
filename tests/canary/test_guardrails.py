"""The guardrails' verdicts from figures per arm (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.canary.arms import ArmFigures
from gateway.canary.guardrails import evaluate
from gateway.policy.canary import CanarySpec

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _spec(**guardrails: Any) -> CanarySpec:
    rails = {"min_samples": 100, "min_duration_s": 600, **guardrails}
    return CanarySpec.model_validate(
        {"name": "c", "candidate": "new", "tier": "t", "mode": "split", "guardrails": rails}
    )


def _arm(
    arm: str,
    requests: int,
    errors: int = 0,
    p95: float | None = 100.0,
    quality: float | None = None,
) -> ArmFigures:
    return ArmFigures(
        arm=arm,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        latency_ms_p50=p95,
        latency_ms_p95=p95,
        tokens_per_s=None,
        cost_usd=0.0,
        quality=quality,
        quality_samples=0 if quality is None else requests,
        feedback=None,
        feedback_count=0,
    )


def _figures(candidate: ArmFigures, stable: ArmFigures | None = None) -> dict[str, ArmFigures]:
    return {
        "stable": stable or _arm("stable", 1000),
        "candidate": candidate,
        "shadow": _arm("shadow", 0, p95=None),
    }


def test_no_verdict_before_min_samples_even_with_errors() -> None:
    """99 failing requests of 100 required: still waiting."""
    verdict = evaluate(
        _spec(), _figures(_arm("candidate", 99, errors=99)), started=T0, now=T0 + timedelta(hours=2)
    )
    assert verdict.outcome == "wait"
    assert "99 of 100" in verdict.reason


def test_error_rate_breach_rolls_back_at_once() -> None:
    """At min_samples an error rate above the maximum rolls back, before min_duration."""
    verdict = evaluate(
        _spec(max_error_rate=0.05), _figures(_arm("candidate", 100, errors=6)), started=T0, now=T0
    )
    assert verdict.outcome == "rollback"
    assert "error rate 6.00% > max_error_rate 5.00%" in verdict.reason
    assert verdict.numbers["arms"]["candidate"]["errors"] == 6


def test_latency_ratio_breach_rolls_back() -> None:
    """p95 of 300 ms against stable's 100 ms is a ratio of 3 > 1.5."""
    verdict = evaluate(
        _spec(max_latency_p95_ratio=1.5),
        _figures(_arm("candidate", 100, p95=300.0)),
        started=T0,
        now=T0,
    )
    assert verdict.outcome == "rollback"
    assert verdict.numbers["latency_p95_ratio"] == 3.0


def test_quality_below_minimum_rolls_back_and_missing_quality_waits() -> None:
    """min_quality: a low mean rolls back; no signal at all waits."""
    low = evaluate(
        _spec(min_quality=0.7), _figures(_arm("candidate", 100, quality=0.5)), started=T0, now=T0
    )
    assert low.outcome == "rollback"
    assert "quality 0.500 < min_quality 0.7" in low.reason
    none = evaluate(_spec(min_quality=0.7), _figures(_arm("candidate", 100)), started=T0, now=T0)
    assert none.outcome == "wait"


def test_pass_waits_for_min_duration_then_promotes_or_is_ready() -> None:
    """Healthy figures wait out min_duration_s, then promote (on_pass: promote) or are ready."""
    healthy = _figures(_arm("candidate", 150, errors=1, p95=110.0))
    early = evaluate(_spec(), healthy, started=T0, now=T0 + timedelta(seconds=599))
    assert early.outcome == "wait"
    assert "min_duration_s" in early.reason
    later = T0 + timedelta(seconds=600)
    spec = _spec().model_copy(update={"on_pass": "promote"})
    assert evaluate(spec, healthy, started=T0, now=later).outcome == "promote"
    assert evaluate(_spec(), healthy, started=T0, now=later).outcome == "ready"

"""The policy's adaptive scorer block: compiled to ``AdaptiveSettings``, and its checks."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.policy.schema import PolicyFile, ScorerSpec
from gateway.scoring.adaptive import AdaptiveSettings

# The fields that only mean something with kind: adaptive.
ADAPTIVE_FIELDS = (
    "base",
    "k",
    "prior",
    "min_similarity",
    "store_embeddings",
    "refresh_s",
    "max_labels",
    "sample_ttl_h",
    "judge",
    "feedback",
)


def base_kind(scorer: ScorerSpec) -> str:
    """The scorer that computes the score before any neighbours' pull: the kind itself, or an
    adaptive scorer's base."""
    return scorer.base if scorer.kind == "adaptive" else scorer.kind


def adaptive_settings(scorer: ScorerSpec) -> AdaptiveSettings | None:
    if scorer.kind != "adaptive":
        return None
    return AdaptiveSettings(
        base=scorer.base,
        k=scorer.k,
        prior=scorer.prior,
        min_similarity=scorer.min_similarity,
        store_embeddings=scorer.store_embeddings,
        refresh_s=scorer.refresh_s,
        max_labels=scorer.max_labels,
        sample_ttl_h=scorer.sample_ttl_h,
        feedback_scope=scorer.feedback.scope,
    )


def adaptive_problems(spec: PolicyFile) -> Iterable[tuple[str, str]]:
    """(path, message) for adaptive settings given to a scorer that is not adaptive, and for a
    judge that names no backend or could never be asked."""
    scorer = spec.scorer
    if scorer.kind == "adaptive":
        yield from _judge_problems(spec)
        return
    for name in ADAPTIVE_FIELDS:
        if name in scorer.model_fields_set:
            yield (
                f"scorer.{name}",
                f"only an adaptive scorer has {name}: add kind: adaptive (with base: "
                f"{scorer.kind}), or remove it",
            )


def _judge_problems(spec: PolicyFile) -> Iterable[tuple[str, str]]:
    judge = spec.scorer.judge
    if judge is None:
        return
    if judge.backend not in spec.backends:
        yield (
            "scorer.judge.backend",
            f"unknown backend {judge.backend!r} (known: {', '.join(sorted(spec.backends))}): "
            f"add it under backends, or name one of those",
        )
    tiers = [t.name for t in spec.tiers]
    scored = [
        r.tiers or tiers
        for r in spec.routes.values()
        if r.tier is None and len(r.tiers or tiers) > 1
    ]
    if not scored:
        yield (
            "scorer.judge",
            "no scored route has a tier above another, so no answer has a stronger tier to be "
            "judged against: add a tier (or a route over several), or remove judge",
        )

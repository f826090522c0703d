"""The policy's adaptive scorer block: compiled to ``AdaptiveSettings``, and its checks."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.policy.schema import ScorerSpec
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
    )


def adaptive_problems(scorer: ScorerSpec) -> Iterable[tuple[str, str]]:
    """(path, message) for adaptive settings given to a scorer that is not adaptive."""
    if scorer.kind == "adaptive":
        return
    for name in ADAPTIVE_FIELDS:
        if name in scorer.model_fields_set:
            yield (
                f"scorer.{name}",
                f"only an adaptive scorer has {name}: add kind: adaptive (with base: "
                f"{scorer.kind}), or remove it",
            )

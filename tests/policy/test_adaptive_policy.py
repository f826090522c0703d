"""``scorer: {kind: adaptive, ...}`` in a policy: compiled settings, the base scorer it wraps,
and errors that say how to fix a misplaced field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import Policy, PolicyError, parse_policy
from gateway.scoring.adaptive import AdaptiveSettings

HEAD = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, max_score: 0.5, backends: [weak]}
  - {name: strong, backends: [strong]}
"""


def load(scorer: str) -> Policy:
    return parse_policy((HEAD + f"scorer: {scorer}\n").encode(), source="p.yaml", base_dir=Path())


def test_adaptive_settings_compile_over_the_named_base() -> None:
    policy = load("{kind: adaptive, base: learned, k: 8, prior: 2, store_embeddings: false}")
    assert policy.adaptive == AdaptiveSettings(
        base="learned", k=8, prior=2.0, store_embeddings=False
    )
    assert policy.learned is not None
    assert policy.scorer_kind == "adaptive"
    over_v1 = load("{kind: adaptive, weights: {code: 0.5}}")
    assert over_v1.adaptive is not None
    assert over_v1.adaptive.base == "v1"
    assert over_v1.scorer.weight("code") == 0.5
    assert load("{kind: v1}").adaptive is None


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        ("{kind: v1, k: 8}", "scorer.k: only an adaptive scorer has k: add kind: adaptive"),
        ("{kind: learned, base: v1}", "scorer.base: only an adaptive scorer has base"),
        ("{kind: adaptive, neighbours: 3}", "scorer.neighbours: unknown field 'neighbours'"),
        ("{kind: adaptive, base: learned, bias: 0.1}", "bias and weights tune the v1 scorer"),
        ("{kind: adaptive, base: v3}", "scorer.base: Input should be 'v1', 'learned' or 'v2'"),
    ],
)
def test_misplaced_adaptive_fields_are_errors_that_say_the_fix(scorer: str, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(scorer)
    assert expected in str(caught.value)

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


def test_feedback_moves_its_own_teams_routing_unless_shared() -> None:
    """By default a /v1/feedback label counts for the rating team only; ``scope: shared``
    opts in to every team learning from every rating."""
    assert load("{kind: adaptive}").adaptive == AdaptiveSettings(feedback_scope="team")
    shared = load("{kind: adaptive, feedback: {scope: shared}}").adaptive
    assert shared == AdaptiveSettings(feedback_scope="shared")


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        (
            "{kind: v1, feedback: {scope: shared}}",
            "scorer.feedback: only an adaptive scorer has feedback",
        ),
        (
            "{kind: adaptive, feedback: {scope: everyone}}",
            "scorer.feedback.scope: Input should be 'team' or 'shared'",
        ),
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


def test_a_judge_block_compiles_with_its_limits() -> None:
    head = HEAD.replace("strong: {type: fake}", "strong: {type: fake}\n  grader: {type: fake}")
    text = head + (
        "scorer: {kind: adaptive, judge: {backend: grader, sample: 0.2, max_per_minute: 5, "
        "max_usd_per_day: 0.5}}\n"
    )
    policy = parse_policy(text.encode(), source="p.yaml", base_dir=Path())
    judge = policy.label_judge
    assert judge is not None
    assert (judge.backend, judge.sample, judge.max_per_minute, judge.max_usd_per_day) == (
        "grader",
        0.2,
        5,
        0.5,
    )
    assert load("{kind: adaptive}").label_judge is None


@pytest.mark.parametrize(
    ("head", "scorer", "expected"),
    [
        (
            HEAD,
            "{kind: adaptive, judge: {backend: nobody}}",
            "scorer.judge.backend: unknown backend 'nobody' (known: strong, weak)",
        ),
        (
            HEAD,
            "{kind: adaptive, judge: {backend: strong, every: 3}}",
            "scorer.judge.every: unknown field 'every'; valid fields here: backend, sample",
        ),
        (
            HEAD,
            "{kind: adaptive, judge: {backend: strong, sample: 1.5}}",
            "scorer.judge.sample: Input should be less than or equal to 1",
        ),
        (
            HEAD,
            "{kind: v2, judge: {backend: strong}}",
            "scorer.judge: only an adaptive scorer has judge: add kind: adaptive",
        ),
        (
            HEAD.replace("  - {name: weak, max_score: 0.5, backends: [weak]}\n", ""),
            "{kind: adaptive, judge: {backend: weak}}",
            "scorer.judge: no scored route has a tier above another",
        ),
    ],
)
def test_judge_problems_say_the_fix(head: str, scorer: str, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy((head + f"scorer: {scorer}\n").encode(), source="p.yaml", base_dir=Path())
    assert expected in str(caught.value)

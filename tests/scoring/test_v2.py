"""The v2 scorer on the request path: the shipped artifact loads, scores are deterministic
probabilities made of the parts it reports, and a policy selects it with ``kind: v2``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adapters.base import Message
from gateway.policy import PolicyError, parse_policy
from gateway.scoring.learned import ArtifactError
from gateway.scoring.v2 import DEFAULT_V2_ARTIFACT, INPUTS, inputs, load_v2, parse_v2

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: 0.3}
  - {name: strong, backends: [strong]}
"""
PROMPTS = [
    "hi",
    "Solve 3x + 7 = 22 and explain each step.",
    "Write a Python function that merges two sorted lists. " * 40,
]


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def test_shipped_artifact_scores_deterministically_inside_0_1() -> None:
    scorer = load_v2()
    for prompt in PROMPTS:
        first = scorer.score(user(prompt), None)
        assert first == scorer.score(user(prompt), None)
        assert 0.0 < first.value < 1.0
    # A fresh parse of the same bytes gives the same numbers (no hidden state).
    again = parse_v2(DEFAULT_V2_ARTIFACT.read_bytes(), "again")
    assert again.score(user(PROMPTS[1]), None).value == scorer.score(user(PROMPTS[1]), None).value


def test_score_is_the_sigmoid_of_its_reported_contributions() -> None:
    scorer = load_v2()
    found = scorer.score(user(PROMPTS[1]), 256)
    logit = sum(c.contribution for c in found.contributions) + scorer.bias
    assert found.value == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-12)
    vector, tokens = inputs(user(PROMPTS[1]), 256)
    assert vector.shape == (len(INPUTS),)
    assert tokens == found.prompt_tokens
    assert found.value == pytest.approx(scorer.probability(vector), abs=1e-12)


def test_only_the_last_user_message_is_embedded() -> None:
    """A system prompt does not change the embedding part (cues read the last user turn too)."""
    scorer = load_v2()
    plain = scorer.score(user(PROMPTS[1]), None)
    with_system = scorer.score(
        [Message(role="system", content="Think step by step."), *user(PROMPTS[1])], None
    )
    embedding = {c.feature: c.contribution for c in plain.contributions}["embedding"]
    assert {c.feature: c.contribution for c in with_system.contributions}["embedding"] == embedding


def test_policy_selects_v2_and_routes_with_it() -> None:
    policy = parse_policy((POLICY + "scorer: {kind: v2}\n").encode(), source="p", base_dir=Path())
    assert policy.scorer_kind == "v2"
    messages = user(PROMPTS[2])
    assert policy.score(messages, None).value == load_v2().score(messages, None).value


def test_policy_rejects_a_broken_artifact_and_v1_weights(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "tiergate-scorer-v2", "version": 1, "inputs": []}))
    spec = POLICY + "scorer: {kind: v2, artifact: broken.json}\n"
    with pytest.raises(PolicyError, match=r"scorer\.artifact.*inputs differ"):
        parse_policy(spec.encode(), source="p", base_dir=tmp_path)
    weights = POLICY + "scorer: {kind: v2, weights: {code: 0.5}}\n"
    with pytest.raises(PolicyError, match="tune the v1 scorer only"):
        parse_policy(weights.encode(), source="p", base_dir=tmp_path)


def test_parse_rejects_other_files_with_a_way_out() -> None:
    with pytest.raises(ArtifactError, match="train-scorer --kind v2"):
        parse_v2(b'{"format": "tiergate-learned-scorer"}', "x")
    raw = json.loads(DEFAULT_V2_ARTIFACT.read_bytes())
    raw["coef"] = raw["coef"][:-1]
    with pytest.raises(ArtifactError, match="need 266 numbers"):
        parse_v2(json.dumps(raw).encode(), "short")

"""The learned scorer: training is reproducible, the artifact loads on the request path without
numpy, and a policy selects it with ``scorer: {kind: learned}``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.base import Message
from gateway.policy import PolicyError, parse_policy
from gateway.scoring.learned import ArtifactError, parse_artifact
from gateway.tools.scorer.evaluate import assign_folds, evaluate, kfold_scores
from gateway.tools.scorer.labels import LabelSet
from gateway.tools.scorer.train import TrainConfig, dumps, featurize, fit

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: 0.3}
  - {name: strong, backends: [strong]}
"""
SMALL = TrainConfig(buckets=1 << 12, platt_folds=2, trees=40)


@pytest.fixture(scope="module")
def sample(routellm: LabelSet) -> LabelSet:
    """Every 12th prompt: ~1,280 prompts of all three benchmarks."""
    return LabelSet(routellm.items[::12], 0)


def test_same_data_gives_the_same_artifact_bytes(sample: LabelSet) -> None:
    first = dumps(fit(sample.items, featurize(sample.items, SMALL.buckets), SMALL))
    second = dumps(fit(sample.items, featurize(sample.items, SMALL.buckets), SMALL))
    assert first == second
    other = dumps(fit(sample.items[1:], featurize(sample.items[1:], SMALL.buckets), SMALL))
    assert other != first


def test_scores_are_probabilities_that_follow_the_labels(sample: LabelSet) -> None:
    """In-sample, prompts where the strong model was needed score higher on average."""
    artifact = fit(sample.items, featurize(sample.items, SMALL.buckets), SMALL)
    scorer = parse_artifact(dumps(artifact), "test")
    scores = [scorer.score(i.messages, i.max_tokens).value for i in sample.items]
    assert all(0.0 < s < 1.0 for s in scores)
    needed = [s for s, i in zip(scores, sample.items, strict=True) if i.strong > i.weak]
    rest = [s for s, i in zip(scores, sample.items, strict=True) if not i.strong > i.weak]
    assert sum(needed) / len(needed) > sum(rest) / len(rest)


def test_kfold_never_scores_a_prompt_it_trained_on(sample: LabelSet) -> None:
    """Folds are balanced per group and stable; each fold's model is trained without it."""
    folds = assign_folds(sample.items, 3)
    assert folds == assign_folds(sample.items, 3)
    for group in sample.groups():
        sizes = [
            sum(1 for i, f in zip(sample.items, folds, strict=True) if i.group == group and f == k)
            for k in range(3)
        ]
        assert max(sizes) - min(sizes) <= 1
    scores = kfold_scores(sample.items, 3, SMALL)
    results = evaluate(sample, {"learned": scores})
    assert [g.group for g in results] == ["gsm8k", "mmlu", "mt_bench"]
    names = [r.name for r in results[0].routers]
    assert names == ["learned", "random", "prompt length", "oracle"]
    assert results[0].routers[1].apgr == pytest.approx(0.5)


def test_a_policy_selects_the_shipped_learned_scorer(tmp_path: Path) -> None:
    policy = parse_policy(
        (POLICY + "scorer: {kind: learned}\n").encode(), source="p", base_dir=tmp_path
    )
    assert policy.scorer_kind == "learned"
    easy = policy.score([Message(role="user", content="hi")], None)
    hard = policy.score(
        [
            Message(
                role="user",
                content="A store sells pens at $3 each or 4 for $10. Tom buys 15 pens the "
                "cheapest way, then returns 20% of them for a refund at the single price. How "
                "much did he spend in the end?",
            )
        ],
        None,
    )
    assert 0.0 < easy.value < 1.0
    assert hard.value > easy.value
    assert hard.prompt_tokens > easy.prompt_tokens


def test_policy_errors_name_the_scorer_fields(tmp_path: Path) -> None:
    bad = POLICY + "scorer: {kind: learned, artifact: missing.json}\n"
    with pytest.raises(PolicyError, match=r"p: scorer.artifact: cannot read .*missing.json"):
        parse_policy(bad.encode(), source="p", base_dir=tmp_path)
    tuned = POLICY + "scorer: {kind: learned, weights: {math: 0.5}}\n"
    with pytest.raises(PolicyError, match=r"scorer\.weights: bias and weights tune the v1 scorer"):
        parse_policy(tuned.encode(), source="p", base_dir=tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    other = POLICY + "scorer: {kind: learned, artifact: other.json}\n"
    with pytest.raises(PolicyError, match="not a tiergate-learned-scorer file"):
        parse_policy(other.encode(), source="p", base_dir=tmp_path)


def test_a_damaged_artifact_says_to_rebuild_it() -> None:
    with pytest.raises(ArtifactError, match="train-scorer"):
        parse_artifact(b'{"format": "tiergate-learned-scorer", "version": 1}', "x")


def test_the_request_path_does_not_import_numpy() -> None:
    probe = (
        "import sys; from gateway.scoring.learned import load_scorer; load_scorer(); "
        "print('numpy' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

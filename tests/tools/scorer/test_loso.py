"""v2 training and leave-one-source-out evaluation on small hand-made label sets: APGR from
first principles, the bootstrap interval, folds that never train on what they score, and
byte-identical artifacts from the same data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from adapters.base import Message
from gateway.scoring.v2 import parse_v2
from gateway.tools.scorer.bootstrap import apgr_of, interval, resamples_for
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.loso import figures, folds_of, summary, v2_scores
from gateway.tools.scorer.quality import apgr, curve
from gateway.tools.scorer.train import dumps
from gateway.tools.scorer.train_v2 import design, fit_v2


def item(n: int, text: str, weak: float, strong: float, group: str, source: str = "") -> Labelled:
    return Labelled(
        id=f"{group}-{n}",
        group=group,
        source=source,
        messages=(Message(role="user", content=text),),
        weak=weak,
        strong=strong,
    )


def synthetic(sources: tuple[str, ...] = ("a", "b", "c"), per: int = 12) -> list[Labelled]:
    """Per source, easy chit-chat both models answer and long proofs only the strong one does
    (every source words them differently, as benchmarks do)."""
    out = []
    for s, source in enumerate(sources):
        for n in range(per):
            if n % 2:
                text = (
                    f"Prove step by step that the sum of the first {n + s} odd numbers is a "
                    f"square, then derive the closed form and justify each equation. " * (1 + s)
                )
                out.append(item(n, text, 0.0, 1.0, source))
            else:
                out.append(item(n, f"Hello {source}, how is day {n} going?", 1.0, 1.0, source))
    return out


def test_apgr_of_a_four_prompt_set_from_first_principles() -> None:
    """gains 1, 1, 0, -1 (quality gap 1). The oracle sends the two gains first: PGR rises
    0 → 2 over the first half, stays 2, then falls to 1; the reversed order mirrors it."""
    weak = np.array([0.0, 0.0, 1.0, 1.0])
    strong = np.array([1.0, 1.0, 1.0, 0.0])
    gain = strong - weak
    oracle_area = 0.5 * (0 + 2) / 2 + 0.25 * (2 + 2) / 2 + 0.25 * (2 + 1) / 2
    assert apgr_of(gain, weak, strong) == pytest.approx(oracle_area)
    # A perfect scorer (any order-preserving transform of the gain) is the oracle.
    assert apgr_of(np.exp(3 * gain), weak, strong) == pytest.approx(oracle_area)
    # One score for all is the random router; the reversed order is the mirror image.
    assert apgr_of(np.zeros(4), weak, strong) == pytest.approx(0.5)
    assert apgr_of(-gain, weak, strong) == pytest.approx(1 - oracle_area)


def test_apgr_of_matches_the_reference_curve_with_ties() -> None:
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(5, 60)
        scores = [float(rng.randint(0, 4)) for _ in range(n)]  # many ties
        weak = [float(rng.random() < 0.5) for _ in range(n)]
        strong = [float(rng.random() < 0.7) for _ in range(n)]
        if sum(weak) == sum(strong):
            continue
        expected = apgr(curve(scores, weak, strong))
        got = apgr_of(np.array(scores), np.array(weak), np.array(strong))
        assert got == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_holds_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    weak = (rng.random(200) < 0.5).astype(float)
    strong = (rng.random(200) < 0.8).astype(float)
    scores = strong - weak + rng.normal(0, 1, 200)
    point = apgr_of(scores, weak, strong)
    draws = resamples_for("g", 200, 300, seed=0)
    first = interval(scores, weak, strong, draws)
    assert first.low < point < first.high
    assert first.resamples == 300
    assert interval(scores, weak, strong, resamples_for("g", 200, 300, seed=0)) == first
    assert interval(scores, weak, strong, resamples_for("g", 200, 300, seed=1)) != first


def test_folds_hold_each_source_out_and_never_train_on_excluded_ids() -> None:
    items = synthetic()
    excluded = frozenset({"a-1", "b-3"})
    for fold, train in folds_of(items, excluded):
        assert fold.held_out not in fold.trained_on
        assert all(items[k].origin != fold.held_out for k in train)
        assert all(items[k].id not in excluded for k in train)
        held = sum(1 for i in items if i.origin == fold.held_out)
        assert fold.training_rows == len(items) - held - sum(
            1 for i in items if i.id in excluded and i.origin != fold.held_out
        )


def test_loso_v2_ranks_an_unseen_source_and_reports_every_router() -> None:
    """Trained on two sources, v2 puts the third's proofs above its chit-chat."""
    items = synthetic()
    x = design(items)
    scores, folds = v2_scores(items, x, frozenset())
    assert [f.held_out for f in folds] == ["a", "b", "c"]
    groups = figures(items, {"v2": scores}, resamples=50, seed=0)
    for g in groups:
        by = {r.name: r for r in g.routers}
        assert set(by) == {"v2", "random", "oracle"}
        assert by["random"].apgr == pytest.approx(0.5)
        assert by["v2"].apgr == pytest.approx(by["oracle"].apgr)  # separable: perfect order
        assert by["v2"].low <= by["v2"].apgr <= by["v2"].high


def test_one_source_is_refused_with_a_reason() -> None:
    items = synthetic(("only",))
    with pytest.raises(ValueError, match="at least two sources"):
        v2_scores(items, design(items), frozenset())


def test_summary_averages_a_source_over_its_groups() -> None:
    """Source s holds groups g1 and g2: its figure is their mean; beats counts sources."""
    items = [
        *(item(n, "x", 0.0, 1.0, "g1", "s") for n in range(2)),
        *(item(n, "x", 0.0, 1.0, "g2", "s") for n in range(2)),
        *(item(n, "x", 0.0, 1.0, "t") for n in range(2)),
    ]
    good = [2.0, 1.0, 2.0, 1.0, 2.0, 1.0]  # gains are equal: any order recovers the same
    groups = figures(items, {"cand": good, "rival": [0.0] * 6}, resamples=10)
    result = summary(groups, "cand", ["rival"])
    assert result["sources"] == 2
    per = result["per_source"]["cand"]
    assert set(per) == {"s", "t"}
    assert result["mean_apgr"]["cand"] == pytest.approx((per["s"] + per["t"]) / 2, abs=1e-4)


def test_training_is_byte_reproducible_and_data_dependent() -> None:
    items = synthetic(per=10)
    x = design(items)
    first = dumps(fit_v2(items, x, sources=["synthetic"]))
    assert dumps(fit_v2(items, design(items), sources=["synthetic"])) == first
    assert dumps(fit_v2(items[1:], x[1:], sources=["synthetic"])) != first
    scorer = parse_v2(first, "synthetic")
    hard = [scorer.probability(x[k]) for k, i in enumerate(items) if i.weak == 0]
    easy = [scorer.probability(x[k]) for k, i in enumerate(items) if i.weak == 1]
    assert min(hard) > max(easy)


def test_fit_refuses_misaligned_inputs() -> None:
    items = synthetic(per=4)
    with pytest.raises(ValueError, match="one row of 266 inputs"):
        fit_v2(items, design(items)[1:])

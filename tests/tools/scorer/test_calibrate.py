"""Calibration: thresholds that hit a target strong share, and a policy file edited in place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.policy import parse_policy
from gateway.tools.scorer.calibrate import (
    CalibrationError,
    edit_max_scores,
    parse_tier_shares,
    plan_thresholds,
    threshold_for_feedback,
    threshold_for_quality,
    threshold_for_share,
    thresholds_for_feedback,
    thresholds_for_shares,
)
from gateway.tools.scorer.labels import LabelSet

ROOT = Path(__file__).resolve().parents[3]


def test_threshold_sits_between_the_last_score_sent_up_and_the_first_kept() -> None:
    """Ten scores .1 .. 1.0, 30 % up: 1.0, .9, .8 go above; the cut is halfway to .7."""
    scores = [round(0.1 * k, 1) for k in range(1, 11)]
    threshold = threshold_for_share(scores, 0.3)
    assert threshold == pytest.approx(0.75)
    assert sum(s > threshold for s in scores) == 3
    assert threshold_for_share(scores, 0.0) == 1.0
    assert threshold_for_share(scores, 1.0) == 0.0


def test_a_tie_across_the_cut_stays_below() -> None:
    """Scores .9 .5 .5 .1 and 50 % up: the tie at .5 cannot be split, so only .9 goes up."""
    threshold = threshold_for_share([0.9, 0.5, 0.5, 0.1], 0.5)
    assert threshold == pytest.approx(0.5)


def test_quality_target_picks_the_smallest_share_that_reaches_it() -> None:
    """weak 1,0,1,0 / strong all 1, scores .9 .8 .1 .2: PGR .5 first at share .5 (see
    test_metrics), so two prompts go up: the cut is halfway between .8 and .2."""
    threshold, share = threshold_for_quality(
        [0.9, 0.8, 0.1, 0.2], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], 0.5
    )
    assert share == pytest.approx(0.5)
    assert threshold == pytest.approx(0.5)


def _halves(labels: LabelSet, scores: list[float]) -> tuple[list[float], list[float]]:
    fit: list[float] = []
    held_out: list[float] = []
    for item, score in zip(labels.items, scores, strict=True):
        even = hashlib.sha256(item.id.encode()).digest()[0] % 2 == 0
        (fit if even else held_out).append(score)
    return fit, held_out


@pytest.mark.parametrize("target", [0.1, 0.2, 0.3, 0.5])
def test_calibrated_share_holds_on_held_out_prompts(
    routellm: LabelSet, shipped_scores: list[float], target: float
) -> None:
    """A threshold fitted on half the RouteLLM prompts sends the target share of the other half
    (about 7,700 prompts it never saw) to the strong tier, within one percentage point."""
    fit, held_out = _halves(routellm, shipped_scores)
    threshold = threshold_for_share(fit, target)
    share = sum(s > threshold for s in held_out) / len(held_out)
    assert abs(share - target) <= 0.01


def test_lower_tiers_are_scaled_down_only_when_they_would_cross() -> None:
    """Three tiers at .2 / .5: a new top threshold of .6 leaves .2; .15 scales .2 by .15/.5."""
    tiers = [("tiny", 0.2), ("local", 0.5), ("remote", 1.0)]
    assert [(c.index, c.new) for c in plan_thresholds(tiers, 0.6)] == [(1, 0.6)]
    changes = plan_thresholds(tiers, 0.15)
    assert [(c.index, c.new) for c in changes] == [(0, pytest.approx(0.06)), (1, 0.15)]
    with pytest.raises(CalibrationError, match="one tier"):
        plan_thresholds([("only", 1.0)], 0.5)


def test_edit_changes_only_the_numbers() -> None:
    """The default policy keeps its comments and layout; only max_score values change."""
    text = (ROOT / "policies" / "default.yaml").read_text()
    edited = edit_max_scores(text, {0: 0.05, 1: 0.412345})
    changed = [
        (a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        ("    max_score: 0.2", "    max_score: 0.05"),
        ("    max_score: 0.5", "    max_score: 0.412345"),
    ]
    policy = parse_policy(edited.encode(), source="edited", base_dir=ROOT / "policies")
    assert [t.max_score for t in policy.tiers] == [0.05, 0.412345, 1.0]


def test_edit_works_in_flow_style_and_names_a_missing_field() -> None:
    text = (
        "tiers:\n"
        "  - {name: a, max_score: 0.3, backends: [x]}  # cheap\n"
        "  - {name: b, backends: [y]}\n"
    )
    assert edit_max_scores(text, {0: 0.7}) == text.replace("0.3", "0.7")
    with pytest.raises(CalibrationError, match=r"tiers\[1\]\.max_score: missing"):
        edit_max_scores(text, {1: 0.5})


def test_feedback_threshold_keeps_the_target_mean() -> None:
    """Ranked by score, running means of the feedback: 1, 1, 0.667, 0.75, 0.6 … with a target
    of 0.7 the last prefix still reaching it ends at the 4th answer (score 0.4)."""
    rated = [(0.1, 1.0), (0.2, 1.0), (0.3, 0.0), (0.4, 1.0), (0.5, 0.0)] + [(0.9, 0.0)] * 15
    found = threshold_for_feedback(rated, 0.7)
    assert (found.kept, found.rated) == (4, 20)
    assert found.kept_mean == pytest.approx(0.75)
    assert found.threshold == pytest.approx(0.45)  # halfway to the next score


def test_feedback_threshold_needs_enough_ratings_and_handles_extremes() -> None:
    with pytest.raises(CalibrationError, match="only 3 requests"):
        threshold_for_feedback([(0.1, 1.0)] * 3, 0.5)
    all_good = [(0.01 * n, 1.0) for n in range(1, 21)]
    assert threshold_for_feedback(all_good, 0.95).threshold == pytest.approx(0.2)  # the highest
    all_bad = [(0.01 * n, 0.0) for n in range(1, 21)]
    nothing = threshold_for_feedback(all_bad, 0.5)
    assert (nothing.threshold, nothing.kept) == (0.0, 0)


def test_feedback_sets_each_cheaper_tier_from_its_own_answers() -> None:
    """tiny's answers are good up to 0.2, local's up to 0.55: with a target of 0.9 each tier
    keeps its 20 good answers and 2 bad ones (20/22 = 0.909), the cut halfway to the next
    score; a local tier rated badly from its first request on cannot rise above tiny, and the
    error says which tier and why."""
    tiny = [(0.01 * n, 1.0) for n in range(1, 21)] + [(0.25, 0.0), (0.28, 0.0), (0.29, 0.0)]
    local = [(0.3 + 0.0125 * n, 1.0) for n in range(1, 21)] + [(0.6, 0.0), (0.62, 0.0)]
    local.append((0.64, 0.0))
    fits = thresholds_for_feedback([("tiny", tiny), ("local", local)], 0.9)
    assert [f.kept for f in fits] == [22, 22]
    assert [f.threshold for f in fits] == pytest.approx([0.285, 0.63])
    assert fits[0].threshold < fits[1].threshold

    bad_local = [(0.3 + 0.01 * n, 0.0) for n in range(1, 21)]
    with pytest.raises(CalibrationError, match="tier 'local': its rated answers average below"):
        thresholds_for_feedback([("tiny", tiny), ("local", bad_local)], 0.9)
    with pytest.raises(CalibrationError, match="tier 'local': only 3 requests"):
        thresholds_for_feedback([("tiny", tiny), ("local", local[:3])], 0.9)


def test_tier_shares_set_every_threshold() -> None:
    """Ten scores 0.05, 0.15, … 0.95: tiny 50 % and local 30 % leave 20 % to the last tier; the
    cuts fall halfway between neighbours, 0.5 and 0.8."""
    scores = [0.05 + 0.1 * i for i in range(10)]
    shares = parse_tier_shares("tiny=0.5, local=0.3", ["tiny", "local", "strong"])
    assert shares == [0.5, 0.3]
    assert thresholds_for_shares(scores, shares) == pytest.approx([0.5, 0.8])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiny=0.5", "give a share for each tier but the last"),
        ("tiny=0.5,local=0.3,strong=0.2", "unknown: strong"),
        ("tiny=0.7,local=0.3", "together they stay below 1"),
        ("tiny=half,local=0.3", "not a number"),
        ("tiny:0.5,local=0.3", "NAME=SHARE"),
    ],
)
def test_bad_tier_shares_say_what_to_give(text: str, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        parse_tier_shares(text, ["tiny", "local", "strong"])


def test_tier_shares_refuse_a_tie_that_would_empty_a_tier() -> None:
    with pytest.raises(CalibrationError, match="same threshold"):
        thresholds_for_shares([0.5] * 10, [0.3, 0.3])

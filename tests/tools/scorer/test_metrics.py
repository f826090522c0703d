"""APGR, CPT and PGR on hand-made label sets whose curves are worked out in the comments."""

from __future__ import annotations

import pytest

from gateway.tools.scorer.quality import apgr, cpt, curve, pgr_at


def test_a_ranked_router_follows_its_order() -> None:
    """Four prompts; the weak model fails p1 and p3, the strong one gets all four."""
    weak = [1.0, 0.0, 1.0, 0.0]
    strong = [1.0, 1.0, 1.0, 1.0]
    scores = [0.9, 0.8, 0.1, 0.2]
    # Gap = 4 - 2 = 2. Order by score: p0 (gain 0), p1 (+1), p3 (+1), p2 (0).
    # PGR after 0,1,2,3,4 prompts go strong: 0, 0, 1/2, 1, 1 at shares 0, .25, .5, .75, 1.
    c = curve(scores, weak, strong)
    assert c.share == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert c.pgr == (0.0, 0.0, 0.5, 1.0, 1.0)
    # Trapezoids: .25*(0+0)/2 + .25*(0+.5)/2 + .25*(.5+1)/2 + .25*(1+1)/2
    #           = 0 + .0625 + .1875 + .25 = 0.5
    assert apgr(c) == pytest.approx(0.5)
    # PGR 0.5 is reached exactly at share 0.5; PGR 0.8 between (.5, .5) and (.75, 1):
    # .5 + (.8 - .5) / (1 - .5) * .25 = 0.65
    assert cpt(c, 0.5) == pytest.approx(0.5)
    assert cpt(c, 0.8) == pytest.approx(0.65)
    assert pgr_at(c, 0.625) == pytest.approx(0.75)
    assert c.quality(0.5) == pytest.approx(0.75)  # weak 0.5 + 0.5 * (1.0 - 0.5)


def test_ties_move_together_and_interpolate() -> None:
    """The oracle scores each prompt by its gain; equal scores form one step of the sweep."""
    weak = [1.0, 0.0, 1.0, 0.0]
    strong = [1.0, 1.0, 1.0, 1.0]
    scores = [s - w for w, s in zip(weak, strong, strict=True)]  # 0, 1, 0, 1
    # p1 and p3 tie at 1 (share .5, PGR 1); p0 and p2 tie at 0 (share 1, PGR 1).
    c = curve(scores, weak, strong)
    assert c.share == (0.0, 0.5, 1.0)
    assert c.pgr == (0.0, 1.0, 1.0)
    # .5*(0+1)/2 + .5*(1+1)/2 = .25 + .5 = 0.75
    assert apgr(c) == pytest.approx(0.75)
    # Inside the first tie group PGR grows linearly from 0 to 1 over shares 0 to .5:
    # PGR .5 at share .25, PGR .8 at share .4.
    assert cpt(c, 0.5) == pytest.approx(0.25)
    assert cpt(c, 0.8) == pytest.approx(0.4)


def test_one_score_for_all_is_the_random_router() -> None:
    """A constant score is one tie group: the diagonal, APGR 1/2, CPT(x) = x."""
    weak = [1.0, 0.0, 0.0, 1.0, 0.0]
    strong = [1.0, 1.0, 0.0, 0.0, 1.0]
    c = curve([0.3] * 5, weak, strong)
    assert c.share == (0.0, 1.0)
    assert c.pgr == (0.0, 1.0)
    assert apgr(c) == pytest.approx(0.5)
    assert cpt(c, 0.5) == pytest.approx(0.5)
    assert cpt(c, 0.8) == pytest.approx(0.8)


def test_prompts_the_strong_model_gets_wrong_pull_pgr_down() -> None:
    """weak = 1, 0, 0; strong = 0, 1, 1: the top-scored prompt loses quality on the strong model."""
    weak = [1.0, 0.0, 0.0]
    strong = [0.0, 1.0, 1.0]
    # Gap = 2 - 1 = 1. Order: p0 (-1), p1 (+1), p2 (+1): PGR 0, -1, 0, 1 at 0, 1/3, 2/3, 1.
    c = curve([0.9, 0.5, 0.1], weak, strong)
    assert c.pgr == (0.0, -1.0, 0.0, 1.0)
    # (1/3)*(0-1)/2 + (1/3)*(-1+0)/2 + (1/3)*(0+1)/2 = -1/6 - 1/6 + 1/6 = -1/6
    assert apgr(c) == pytest.approx(-1 / 6)
    # PGR .5 between (2/3, 0) and (1, 1): 2/3 + .5 * 1/3 = 5/6
    assert cpt(c, 0.5) == pytest.approx(5 / 6)


def test_judge_grades_work_like_correctness() -> None:
    """MT-Bench-style grades: weak 8 and 6, strong 9 and 9."""
    # Gap = 18 - 14 = 4. Order: p1 (+3), p0 (+1): PGR 0, 3/4, 1 at shares 0, 1/2, 1.
    c = curve([0.2, 0.7], [8.0, 6.0], [9.0, 9.0])
    assert c.pgr == (0.0, 0.75, 1.0)
    # .5*(0+.75)/2 + .5*(.75+1)/2 = .1875 + .4375 = 0.625
    assert apgr(c) == pytest.approx(0.625)
    # PGR .5 at share .5 * (.5 / .75) = 1/3; PGR .8 at .5 + (.05 / .25) * .5 = 0.6
    assert cpt(c, 0.5) == pytest.approx(1 / 3)
    assert cpt(c, 0.8) == pytest.approx(0.6)
    assert c.weak_quality == pytest.approx(7.0)


def test_no_quality_gap_is_an_error() -> None:
    """PGR divides by the gap: equal mean qualities cannot be scored."""
    with pytest.raises(ValueError, match="same mean quality"):
        curve([0.1, 0.2], [1.0, 0.0], [0.0, 1.0])

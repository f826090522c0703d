"""Comparing answers, the judge's grade and its rate limit."""

from __future__ import annotations

from gateway.canary.compare import compare
from gateway.routing.judge import RateLimit, parse_grade

STABLE = "Paris is the capital of France, on the Seine."


def test_the_same_kind_of_answer_scores_one() -> None:
    """A complete answer of similar length is quality 1 with no signals."""
    result = compare(STABLE, "stop", "The capital of France is Paris, by the Seine.", "stop")
    assert result.quality == 1.0
    assert result.signals == ()


def test_empty_refusal_and_truncation_cut_the_score() -> None:
    """An empty answer is 0; a refusal and a truncation each lower the score."""
    assert compare(STABLE, "stop", "  ", "stop").quality == 0.0
    refusal = compare(STABLE, "stop", "I'm sorry, I can't help with that request today.", "stop")
    assert refusal.quality < 0.3
    assert "refusal" in refusal.signals
    cut = compare(STABLE, "stop", "Paris is the capital of France, on the", "length")
    assert cut.quality < 1.0
    assert "truncated" in cut.signals


def test_length_far_from_stable_cuts_the_score() -> None:
    """An answer a tenth of stable's length scores about 0.6."""
    result = compare("word " * 100, "stop", "word " * 10, "stop")
    assert 0.55 <= result.quality <= 0.65


def test_the_judge_caps_the_score() -> None:
    """The lower of the cheap signals and the judge's grade wins."""
    assert compare(STABLE, "stop", STABLE, "stop", judge=0.4).quality == 0.4


def test_parse_grade() -> None:
    assert parse_grade("7") == 0.7
    assert parse_grade("Grade: 10/10") == 1.0
    assert parse_grade("no idea") is None


def test_rate_limit_is_a_sliding_minute() -> None:
    """Two per minute: the third call within 60 s is refused, allowed once the first ages out."""
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert limit.acquire()
    assert limit.acquire()
    assert not limit.acquire()
    now[0] = 60.0
    assert limit.acquire()

"""The cascade's confidence: log-prob features and the isotonic table, against hand-computed
values."""

from __future__ import annotations

import itertools

import pytest

from gateway.scoring.confidence import (
    CalibrationError,
    calibration_from,
    features,
    interpolate,
    load_calibration,
    quantile,
    token_logprobs,
)

POINTS = ((-3.0, 0.0), (-1.0, 0.5), (-0.5, 0.5), (0.0, 1.0))


@pytest.mark.parametrize(
    ("x", "expected"),
    [(-9.0, 0.0), (-3.0, 0.0), (-2.0, 0.25), (-1.0, 0.5), (-0.75, 0.5), (-0.25, 0.75), (3, 1.0)],
)
def test_the_table_is_linear_between_its_points_and_flat_beyond(x: float, expected: float) -> None:
    assert interpolate(POINTS, x) == pytest.approx(expected)


def test_the_calibrated_confidence_is_monotone_in_the_raw_score() -> None:
    table = calibration_from({"weights": {"mean": 2.0}, "bias": 1.0, "points": POINTS}, "t")
    sweep = [table.confidence([v / 100.0]) for v in range(-400, 50)]
    assert all(b >= a for a, b in itertools.pairwise(sweep))
    assert sweep[0] == 0.0
    assert sweep[-1] == 1.0
    # raw = 1 + 2 × mean: a mean of -1.5 gives raw -2, which the table maps to 0.25.
    assert table.confidence([-1.0, -2.0]) == pytest.approx(0.25)


def test_features_by_hand() -> None:
    values = [-0.1, -2.0, -0.5, -1.0]
    got = features(values)
    assert got["min"] == -2.0
    assert got["mean"] == pytest.approx(-0.9)
    assert got["last"] == -1.0
    # Sorted: -2, -1, -0.5, -0.1; the 10th percentile sits 0.3 of the way from -2 to -1.
    assert got["p10"] == pytest.approx(-1.7)
    assert quantile(values, 0.25) == pytest.approx(-1.25)
    assert features([]) == {}


def test_an_answer_without_tokens_has_no_confidence() -> None:
    table = calibration_from({"weights": {"min": 1.0}, "points": POINTS}, "t")
    assert table.confidence([]) == 0.0


def test_log_probs_are_read_from_the_openai_shape() -> None:
    obj = {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": float("-inf")}]}
    assert token_logprobs(obj) == (-0.5, -100.0)
    assert token_logprobs(None) == ()
    assert token_logprobs({"content": None}) == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"weights": {"median": 1.0}, "points": POINTS}, "unknown feature"),
        ({"weights": {"min": 1.0}, "points": [[0, 0.5], [1, 0.4]]}, "non-decreasing"),
        ({"weights": {"min": 1.0}, "points": [[0, 0.5]]}, "at least two"),
        ({"weights": {"min": 1.0}, "points": [[0, 0.5], [1, 1.5]]}, r"\[0, 1\]"),
    ],
)
def test_a_bad_table_is_refused_with_the_fix(raw: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        calibration_from(raw, "t")


def test_the_shipped_calibration_loads_and_rises() -> None:
    table = load_calibration()
    ys = [y for _, y in table.points]
    assert ys == sorted(ys)
    assert 0.0 <= ys[0] < ys[-1] <= 1.0

"""How sure a cheap model was of its answer: features of its per-token log-probabilities,
a linear raw score over them, and an isotonic calibration (a monotone piecewise-linear table
fitted offline by ``tiergate cascade-calibrate``) that turns the raw score into the estimated
probability that the answer is correct.

Pure and dependency-free: the request path evaluates the stored table in plain Python
(scikit-learn's ``IsotonicRegression`` fits it offline only). The confidence cascade
(``gateway.routing.cascade``) keeps a cheap answer whose confidence reaches the tier's
``min_confidence`` and asks the next tier otherwise.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

FEATURES: tuple[str, ...] = ("min", "p10", "p25", "mean", "last")
DEFAULT_CALIBRATION = Path(__file__).with_name("cascade_smollm2.json")


class CalibrationError(ValueError):
    """A calibration that cannot be used; the message says what to do."""


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation between order statistics
    (numpy's default method)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def features(logprobs: Sequence[float]) -> dict[str, float]:
    """The answer's per-token log-prob summaries: its least likely token, the 10th and 25th
    percentiles, the mean and the last token's. Empty (no tokens) gives an empty dict."""
    if not logprobs:
        return {}
    return {
        "min": min(logprobs),
        "p10": quantile(logprobs, 0.10),
        "p25": quantile(logprobs, 0.25),
        "mean": sum(logprobs) / len(logprobs),
        "last": logprobs[-1],
    }


def token_logprobs(obj: Any) -> tuple[float, ...]:
    """The chosen tokens' log-probs from an OpenAI-shaped ``logprobs`` object
    (``{"content": [{"token": ..., "logprob": ...}, ...]}``); empty when there are none."""
    content = obj.get("content") if isinstance(obj, Mapping) else None
    if not isinstance(content, Sequence):
        return ()
    out: list[float] = []
    for item in content:
        value = item.get("logprob") if isinstance(item, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(max(float(value), -100.0))  # -inf (a masked token) stays finite
    return tuple(out)


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """The piecewise-linear function through ``points`` (sorted by x, y non-decreasing) at
    ``x``; flat beyond the first and last points."""
    xs = [p[0] for p in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    right = bisect.bisect_right(xs, x)
    (x0, y0), (x1, y1) = points[right - 1], points[right]
    if x1 == x0:
        return y1
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True, slots=True)
class Calibration:
    """raw = bias + Σ weight × feature; confidence = the isotonic table at raw, in [0, 1]."""

    weights: Mapping[str, float]
    bias: float
    points: tuple[tuple[float, float], ...]
    source: str = "inline"

    def raw(self, logprobs: Sequence[float]) -> float | None:
        """The raw score, or ``None`` for an answer without tokens."""
        values = features(logprobs)
        if not values:
            return None
        return self.bias + sum(w * values[name] for name, w in self.weights.items())

    def confidence(self, logprobs: Sequence[float]) -> float:
        """Calibrated P(correct). An answer with no token log-probs has no evidence: 0."""
        raw = self.raw(logprobs)
        if raw is None:
            return 0.0
        return min(1.0, max(0.0, interpolate(self.points, raw)))


def calibration_from(raw: Any, source: str) -> Calibration:
    """A calibration from its JSON form: ``{"weights": {feature: w}, "bias": b,
    "points": [[raw, confidence], ...]}`` (the artifact may carry more, such as its metrics)."""
    if not isinstance(raw, Mapping):
        raise CalibrationError(f"{source}: must be a JSON object with weights, bias and points")
    weights = raw.get("weights")
    points = raw.get("points")
    bias = raw.get("bias", 0.0)
    if not isinstance(weights, Mapping) or not weights:
        raise CalibrationError(
            f"{source}: `weights` must map some of {', '.join(FEATURES)} to numbers"
        )
    unknown = [name for name in weights if name not in FEATURES]
    if unknown:
        raise CalibrationError(
            f"{source}: unknown feature(s) {', '.join(map(str, unknown))} in `weights`; "
            f"use {', '.join(FEATURES)}"
        )
    if not isinstance(points, Sequence) or len(points) < 2:
        raise CalibrationError(f"{source}: `points` needs at least two [raw, confidence] pairs")
    try:
        table = tuple((float(p[0]), float(p[1])) for p in points)
        coefficients = {str(k): float(v) for k, v in weights.items()}
        offset = float(bias)
    except (TypeError, ValueError, IndexError) as exc:
        raise CalibrationError(f"{source}: weights, bias and points must be numbers") from exc
    if any(b[0] < a[0] or b[1] < a[1] for a, b in itertools.pairwise(table)):
        raise CalibrationError(
            f"{source}: `points` must be sorted by raw score with non-decreasing confidence "
            f"(an isotonic table); refit it with `tiergate cascade-calibrate`"
        )
    if any(not 0.0 <= y <= 1.0 for _, y in table):
        raise CalibrationError(f"{source}: every confidence in `points` must lie in [0, 1]")
    return Calibration(MappingProxyType(coefficients), offset, table, source)


def load_calibration(path: Path | None = None) -> Calibration:
    """A calibration artifact (default: the one fitted for SmolLM2-135M-Instruct, shipped)."""
    target = path or DEFAULT_CALIBRATION
    try:
        raw = orjson.loads(target.read_bytes())
    except OSError as exc:
        raise CalibrationError(
            f"cannot read the calibration {target} ({exc.strerror}); fit one with "
            f"`tiergate cascade-calibrate --out {target}` or fix the path"
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise CalibrationError(f"{target} is not JSON ({exc}); refit it") from exc
    return calibration_from(raw, str(target))

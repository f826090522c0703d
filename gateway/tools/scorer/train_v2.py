"""Training the v2 scorer (offline: ``tiergate train-scorer --kind v2``, and per held-out source
inside ``tiergate eval-router --loso``). numpy only; the same data gives the same bytes.

What has to carry over is what tells a benchmark's harder prompts from its easier ones on a
benchmark never seen, so the model is built to keep only directions the sources agree on:

* The target, per group (benchmark pair), standardised within the group so scales compare:
  ``blend`` (the default) sums the weak model's shortfall (minus its quality) and the prompt's
  hardness (minus the mean quality of the many models the source publishes, ``Labelled.crowd``;
  the pair's mean where it publishes none), a less noisy sign of difficulty than one model's 0
  or 1; ``weak_shortfall`` and ``hardness`` are its parts alone, ``gain`` is strong - weak.
* The inputs (``gateway.scoring.v2``) are standardised, then centred within each group, so
  nothing is learned from what tells one benchmark from another.
* One ridge regression per *source* (its groups weighing the same), then the coordinate-wise
  median of the sources' weights: a weight survives only as far as most sources agree on its
  sign and size, so no one benchmark's quirk (longer means harder on GSM8K, easier on
  AlpacaEval) steers the rest. Pooling every row into one regression instead scored 0.524 in
  leave-one-source-out; this 0.574 (bench/router-eval.md says how the choice was made).

A logistic curve fitted on the training data then maps the model's output to P(the strong model
does strictly better).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from gateway.scoring.v2 import FORMAT, INPUTS, inputs_many
from gateway.tools.scorer.labels import Labelled

Target = Literal["blend", "weak_shortfall", "gain", "hardness"]


@dataclass(frozen=True, slots=True)
class V2Config:
    alpha: float = 0.3  # the ridge penalty per source, on standardised inputs (per row)
    target: Target = "blend"


DEFAULT_CONFIG = V2Config()


def design(items: Sequence[Labelled]) -> NDArray[np.float64]:
    """The input matrix of ``items`` (one row each, ``INPUTS`` order)."""
    return inputs_many([(i.messages, i.max_tokens) for i in items])


def fit_v2(
    items: Sequence[Labelled],
    x: NDArray[np.float64],
    config: V2Config = DEFAULT_CONFIG,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """Train on ``items`` (rows of ``x``); return the artifact as a JSON-ready dict."""
    if len(items) != x.shape[0] or x.shape[1] != len(INPUTS):
        raise ValueError(f"need one row of {len(INPUTS)} inputs per labelled prompt")
    if len(items) < 2:
        raise ValueError("training the v2 scorer needs at least 2 labelled prompts")
    groups = sorted({i.group for i in items})
    member = np.array([groups.index(i.group) for i in items])
    weight = _group_weights(member, len(groups))
    mean = _rounded(x.mean(axis=0))
    std = _rounded(x.std(axis=0))
    std[std == 0] = 1.0
    z = (x - mean) / std
    target = np.zeros(len(items))
    centred = np.empty_like(z)
    for g in range(len(groups)):
        rows = member == g
        target[rows] = target_of([i for i, r in zip(items, rows, strict=True) if r], config.target)
        centred[rows] = z[rows] - z[rows].mean(axis=0)
    origins = sorted({i.origin for i in items})
    origin = np.array([origins.index(i.origin) for i in items])
    per_source = np.array(
        [
            ridge(centred[origin == o], target[origin == o], weight[origin == o], config.alpha)
            for o in range(len(origins))
        ]
    )
    coef = _rounded(np.median(per_source, axis=0))
    slope, offset = _platt(z @ coef, np.array([i.strong > i.weak for i in items]), weight)
    artifact: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "inputs": list(INPUTS),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "coef": [float(v) for v in coef],
        "intercept": 0.0,
        "platt": [_round(slope), _round(offset)],
        "training": {
            "config": asdict(config),
            "rows": len(items),
            "groups": {g: int((member == k).sum()) for k, g in enumerate(groups)},
            "combined": "median of one ridge regression per source",
            "per_source": {o: int((origin == k).sum()) for k, o in enumerate(origins)},
            "sources": list(sources),
        },
    }
    artifact["digest"] = hashlib.sha256(json.dumps(artifact, sort_keys=True).encode()).hexdigest()[
        :16
    ]
    return artifact


def target_of(items: Sequence[Labelled], kind: Target) -> NDArray[np.float64]:
    """One group's target, standardised within the group (0 where it does not vary)."""

    def standard(values: list[float]) -> NDArray[np.float64]:
        raw = np.array(values, dtype=np.float64)
        spread = float(raw.std())
        out: NDArray[np.float64] = (raw - raw.mean()) / spread if spread > 0 else raw * 0.0
        return out

    shortfall = standard([-i.weak for i in items])
    if kind == "weak_shortfall":
        return shortfall
    if kind == "gain":
        return standard([i.gain for i in items])
    if kind == "hardness":
        return standard([i.hardness for i in items])
    return shortfall + standard([i.hardness for i in items])


def ridge(
    x: NDArray[np.float64], y: NDArray[np.float64], weight: NDArray[np.float64], alpha: float
) -> NDArray[np.float64]:
    """Weighted ridge regression, the penalty per unit of weight (so it means the same for a
    source of 72 prompts as for one of 14,000)."""
    total = float(weight.sum())
    weighted = x * weight[:, None]
    gram = x.T @ weighted / total + alpha * np.eye(x.shape[1])
    coef: NDArray[np.float64] = np.asarray(
        np.linalg.solve(gram, weighted.T @ y / total), dtype=np.float64
    )
    return coef


def _group_weights(member: NDArray[np.int64], groups: int) -> NDArray[np.float64]:
    counts = np.bincount(member, minlength=groups).astype(np.float64)
    weight: NDArray[np.float64] = (len(member) / groups) / counts[member]
    return weight


def _platt(
    score: NDArray[np.float64], needed: NDArray[np.bool_], weight: NDArray[np.float64]
) -> tuple[float, float]:
    """A logistic curve P(needed) = sigmoid(a * score + b), by Newton's method (weighted).
    When the scores do not rise with the truth (a <= 0), a plain squashing curve instead: the
    order of the scores is kept, never turned upside down."""
    spread = float(score.std()) or 1.0
    s = score / spread
    y = needed.astype(np.float64)
    a, b = 0.0, 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * s + b, -500.0, 500.0)))  # separable: no overflow
        r = weight * (p - y)
        h = weight * p * (1 - p) + 1e-9
        grad = np.array([(r * s).sum(), r.sum()])
        hess = np.array([[(h * s * s).sum(), (h * s).sum()], [(h * s).sum(), h.sum()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a - float(step[0]), b - float(step[1])
        if abs(step).max() < 1e-10:
            break
    if not a > 0:
        a, b = 1.0, 0.0
    return a / spread, b


def _rounded(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array([_round(float(v)) for v in values], dtype=np.float64)


def _round(value: float) -> float:
    """Six significant digits: the last bits of a float differ between BLAS builds."""
    return float(f"{float(value):.6g}")

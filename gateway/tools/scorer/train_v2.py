"""Training the v2 scorer (offline: ``tiergate train-scorer --kind v2``, and per held-out source
inside ``tiergate eval-router --loso``). numpy only; the same data gives the same bytes.

The target makes benchmarks with different scales comparable: per group (benchmark pair), the
weak model's shortfall (``weak_shortfall``: minus the weak model's quality) or the quality
gained by the strong model (``gain``: strong - weak), standardised within the group. Each group
weighs the same in total, however many prompts it has. The inputs (``gateway.scoring.v2``) are
standardised, then centred within each group, so the ridge regression learns what tells a
group's harder prompts from its easier ones, not what tells one benchmark from another (which
says nothing about a new one). A logistic curve fitted on the training data then maps the
model's output to P(the strong model does strictly better).
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

Target = Literal["weak_shortfall", "gain"]


@dataclass(frozen=True, slots=True)
class V2Config:
    alpha: float = 100.0  # the ridge penalty, on standardised inputs (weights average 1)
    target: Target = "weak_shortfall"


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
    raw = np.array(
        [-i.weak if config.target == "weak_shortfall" else i.gain for i in items], dtype=np.float64
    )
    target = np.zeros(len(items))
    centred = np.empty_like(z)
    for g in range(len(groups)):
        rows = member == g
        spread = float(raw[rows].std())
        target[rows] = (raw[rows] - raw[rows].mean()) / spread if spread > 0 else 0.0
        centred[rows] = z[rows] - z[rows].mean(axis=0)
    weighted = centred * weight[:, None]
    gram = centred.T @ weighted + config.alpha * np.eye(len(INPUTS))
    coef = _rounded(np.asarray(np.linalg.solve(gram, weighted.T @ target), dtype=np.float64))
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
            "sources": list(sources),
        },
    }
    artifact["digest"] = hashlib.sha256(json.dumps(artifact, sort_keys=True).encode()).hexdigest()[
        :16
    ]
    return artifact


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
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
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

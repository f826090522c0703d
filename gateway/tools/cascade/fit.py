"""Fitting the cascade's calibration from graded answers, and measuring it honestly.

Each candidate raw score (one log-prob feature, or a logistic regression over all of them) is
fitted and isotonic-calibrated on four folds and scored on the fifth; the candidate whose
out-of-fold calibrated confidence ranks right answers above wrong ones best (AUROC) is refitted
on everything and becomes the artifact. The curve is computed from the out-of-fold confidences,
so it is not flattered by fitting on the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from gateway.scoring.confidence import FEATURES, Calibration, calibration_from, features

CANDIDATES: tuple[str, ...] = (*FEATURES, "logistic")
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True, slots=True)
class Graded:
    """One answered question: its kind, the answer, whether it was right, its token log-probs."""

    kind: str
    question: str
    answer: str
    right: bool
    logprobs: tuple[float, ...]


def _matrix(rows: Sequence[Graded]) -> np.ndarray:
    values = [features(r.logprobs) or dict.fromkeys(FEATURES, -100.0) for r in rows]
    return np.array([[v[name] for name in FEATURES] for v in values], dtype=np.float64)


def fit(rows: Sequence[Graded], candidate: str) -> Calibration:
    """A calibration of ``candidate``'s raw score, fitted on ``rows``."""
    x = _matrix(rows)
    y = np.array([r.right for r in rows], dtype=np.float64)
    if candidate == "logistic":
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        weights = {name: float(w) for name, w in zip(FEATURES, model.coef_[0], strict=True)}
        bias = float(model.intercept_[0])
    else:
        weights, bias = {candidate: 1.0}, 0.0
    raw = x @ np.array([weights.get(name, 0.0) for name in FEATURES]) + bias
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    points = [
        [round(float(a), 6), round(float(b), 6)]
        for a, b in zip(iso.X_thresholds_, iso.y_thresholds_, strict=True)
    ]
    if len(points) < 2:  # every answer alike: a flat table
        points = [[points[0][0] - 1.0, points[0][1]], points[0]]
    raw_form: Mapping[str, Any] = {"weights": weights, "bias": round(bias, 6), "points": points}
    return calibration_from(raw_form, f"fitted {candidate}")


def _auroc(right: Sequence[bool], score: Sequence[float]) -> float | None:
    if len(set(right)) < 2:
        return None
    return round(float(roc_auc_score(right, score)), 4)


def out_of_fold(rows: Sequence[Graded], candidate: str, folds: int = 5) -> list[float]:
    """Each answer's confidence from a calibration fitted without its fold."""
    confidence = [0.0] * len(rows)
    for fold in range(folds):
        train = [r for i, r in enumerate(rows) if i % folds != fold]
        table = fit(train, candidate)
        for i in range(fold, len(rows), folds):
            confidence[i] = table.confidence(rows[i].logprobs)
    return confidence


def curve(rows: Sequence[Graded], confidence: Sequence[float]) -> list[dict[str, float | None]]:
    """For each threshold: the share escalated, the kept answers' accuracy, the accuracy if
    every escalated answer were right (the next tier as an oracle: an upper bound), and the
    same with as many answers escalated at random (what the confidence adds)."""
    n = len(rows)
    base = sum(r.right for r in rows) / n
    out: list[dict[str, float | None]] = []
    for t in THRESHOLDS:
        kept = [r.right for r, c in zip(rows, confidence, strict=True) if c >= t]
        share = 1.0 - len(kept) / n
        out.append(
            {
                "threshold": t,
                "escalated_share": round(share, 4),
                "kept_accuracy": round(sum(kept) / len(kept), 4) if kept else None,
                "accuracy_if_escalations_right": round((sum(kept) + (n - len(kept))) / n, 4),
                "random_escalation_accuracy": round(base + share * (1.0 - base), 4),
            }
        )
    return out


def report(rows: Sequence[Graded]) -> tuple[Calibration, dict[str, Any]]:
    """The chosen calibration (fitted on every answer) and the figures behind it."""
    right = [r.right for r in rows]
    raw_auroc = {
        name: _auroc(right, [(features(r.logprobs) or {name: -100.0})[name] for r in rows])
        for name in FEATURES
    }
    cv = {c: out_of_fold(rows, c) for c in CANDIDATES}
    cv_auroc = {c: _auroc(right, cv[c]) for c in CANDIDATES}
    chosen = max(CANDIDATES, key=lambda c: (cv_auroc[c] or 0.0, c != "logistic"))
    by_kind: dict[str, Any] = {}
    for kind in sorted({r.kind for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.kind == kind]
        by_kind[kind] = {
            "questions": len(idx),
            "accuracy": round(sum(rows[i].right for i in idx) / len(idx), 4),
            "auroc_confidence": _auroc([rows[i].right for i in idx], [cv[chosen][i] for i in idx]),
        }
    figures = {
        "questions": len(rows),
        "accuracy": round(sum(right) / len(rows), 4),
        "by_kind": by_kind,
        "auroc_raw_features_in_sample": raw_auroc,
        "auroc_calibrated_out_of_fold": cv_auroc,
        "chosen": chosen,
        "curve": curve(rows, cv[chosen]),
    }
    return fit(rows, chosen), figures

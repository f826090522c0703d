"""Training the learned scorer (offline: ``tiergate train-scorer``, and per fold inside
``tiergate eval-router --kfold``). numpy, scipy and scikit-learn are imported here only, never
on the request path: ``pip install 'tiergate[train]'``.

Per prompt shape (multiple choice, open), two models predict the quality gained by sending the
prompt to the strong model, (strong - weak) scaled by each group's quality range: a ridge
regression over the hashed words and word pairs plus the dense cues, and gradient-boosted trees
over the dense cues alone; their outputs are mixed on a common scale. (With ``balance_groups``
each group, i.e. benchmark, weighs the same in total.) A logistic curve fitted on out-of-fold
predictions (Platt scaling) then turns the mix into P(strong needed), "needed" meaning the strong
model did strictly better. The same data and settings give the same artifact bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gateway.scoring.features import DENSE, SHAPES, RequestFeatures, extract
from gateway.scoring.learned import FORMAT, encode_weights
from gateway.tools.scorer.labels import Labelled


@dataclass(frozen=True, slots=True)
class TrainConfig:
    buckets: int = 1 << 16
    alpha: float = 3.0
    # The dense cues' columns are multiplied by this: a row's hashed part has norm 1, so the
    # dense part (~26 standardised values) would otherwise dominate the ridge penalty's balance.
    dense_scale: float = 0.1
    trees: int = 150
    tree_depth: int = 3
    trees_mix: float = 0.5  # the trees' weight next to the linear part's (both standardised)
    platt_folds: int = 4
    balance_groups: bool = False


def featurize(items: Sequence[Labelled], buckets: int) -> list[RequestFeatures]:
    return [extract(i.messages, i.max_tokens, buckets) for i in items]


def _needs() -> Any:
    try:
        import numpy as np
        from scipy import sparse
        from sklearn.linear_model import LogisticRegression, Ridge
    except ImportError:
        raise SystemExit(
            "training needs numpy, scipy and scikit-learn: pip install 'tiergate[train]'"
        ) from None
    return np, sparse, Ridge, LogisticRegression


def fit(
    items: Sequence[Labelled],
    feats: Sequence[RequestFeatures],
    config: TrainConfig = TrainConfig(),
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """Train on ``items`` (with their ``feats``); return the artifact as a JSON-ready dict."""
    np, _, _, _ = _needs()
    dense = np.array([f.dense for f in feats], dtype=np.float64)
    # Rounded first: the runtime standardises with the rounded values the artifact holds, and
    # tree thresholds must see the same numbers.
    mean = np.array([_round(v) for v in dense.mean(axis=0)])
    std = np.array([_round(v) or 1.0 for v in dense.std(axis=0)])
    z = (dense - mean) / std
    target, weight = _targets(items, config.balance_groups)
    needed = np.array([i.strong > i.weak for i in items], dtype=np.int64)
    models: dict[str, Any] = {}
    for shape in SHAPES:
        rows = [k for k, f in enumerate(feats) if f.shape == shape] or list(range(len(feats)))
        models[shape] = _fit_shape(
            [feats[k] for k in rows], z[rows], target[rows], weight[rows], needed[rows], config
        )
    artifact: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "buckets": config.buckets,
        "dense": list(DENSE),
        "mean": [_round(v) for v in mean],
        "std": [_round(v) for v in std],
        "models": models,
        "training": {
            "config": asdict(config),
            "rows": len(items),
            "groups": {g: sum(1 for i in items if i.group == g) for g in _groups(items)},
            "sources": list(sources),
        },
    }
    artifact["digest"] = hashlib.sha256(_canonical(artifact)).hexdigest()[:16]
    return artifact


def dumps(artifact: dict[str, Any]) -> bytes:
    """The artifact's file bytes: sorted keys, fixed layout, so equal models give equal bytes."""
    return json.dumps(artifact, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _canonical(artifact: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in artifact.items() if k != "digest"}, sort_keys=True).encode()


def _groups(items: Sequence[Labelled]) -> list[str]:
    return sorted({i.group for i in items})


def _targets(items: Sequence[Labelled], balance: bool) -> tuple[Any, Any]:
    np, _, _, _ = _needs()
    spans: dict[str, float] = {}
    counts: dict[str, int] = {}
    for group in _groups(items):
        members = [i for i in items if i.group == group]
        values = [v for i in members for v in (i.weak, i.strong)]
        spans[group] = (max(values) - min(values)) or 1.0
        counts[group] = len(members)
    target = np.array([i.gain / spans[i.group] for i in items], dtype=np.float64)
    if balance:
        share = len(items) / len(counts)
        weight = np.array([share / counts[i.group] for i in items], dtype=np.float64)
    else:
        weight = np.ones(len(items), dtype=np.float64)
    return target, weight


def _design(feats: Sequence[RequestFeatures], z: Any, buckets: int) -> Any:
    np, sparse, _, _ = _needs()
    indices: list[int] = []
    indptr = [0]
    values: list[float] = []
    for f in feats:
        indices.extend(f.buckets)
        values.extend([1.0 / math.sqrt(len(f.buckets))] * len(f.buckets))
        indptr.append(len(indices))
    text = sparse.csr_matrix(
        (np.array(values), np.array(indices, dtype=np.int64), np.array(indptr)),
        shape=(len(feats), buckets),
    )
    return sparse.hstack([text, sparse.csr_matrix(z)], format="csr")


def _fit_shape(
    feats: Sequence[RequestFeatures],
    z: Any,
    target: Any,
    weight: Any,
    needed: Any,
    config: TrainConfig,
) -> dict[str, Any]:
    np, _, ridge, logistic = _needs()
    x = _design(feats, z * config.dense_scale, config.buckets)

    def train(rows: Any) -> tuple[Any, Any]:
        linear = ridge(alpha=config.alpha, solver="sparse_cg", tol=1e-6, max_iter=2000)
        linear.fit(x[rows], target[rows], sample_weight=weight[rows])
        return linear, _fit_trees(z[rows], target[rows], weight[rows], config)

    full_linear, full_trees = train(np.arange(len(feats)))
    # The two parts are mixed on a common scale: each divided by its spread on the data.
    mix_linear = 1.0 / (float(np.std(full_linear.predict(x))) or 1.0)
    mix_trees = 0.0
    if full_trees is not None:
        mix_trees = config.trees_mix / (float(np.std(full_trees.predict(z))) or 1.0)

    def predict(models: tuple[Any, Any], rows: Any) -> Any:
        out = mix_linear * models[0].predict(x[rows])
        if models[1] is not None:
            out = out + mix_trees * models[1].predict(z[rows])
        return out

    # Platt scaling on out-of-fold predictions: in-sample ones would be overconfident.
    held_out = np.zeros(len(feats))
    folds = np.arange(len(feats)) % max(2, config.platt_folds)
    for k in range(max(2, config.platt_folds)):
        test = folds == k
        if test.all() or not test.any():
            held_out[:] = predict((full_linear, full_trees), np.arange(len(feats)))
            break
        held_out[test] = predict(train(np.flatnonzero(~test)), np.flatnonzero(test))
    if needed.min() == needed.max():
        rate = min(max(float(needed.mean()), 1e-3), 1 - 1e-3)
        platt = (0.0, math.log(rate / (1 - rate)))
    else:
        curve = logistic(C=1e4, max_iter=1000).fit(held_out[:, None], needed, sample_weight=weight)
        platt = (float(curve.coef_[0][0]), float(curve.intercept_[0]))
        if platt[0] <= 0:
            # Held-out predictions that do not rise with the truth: too little data to learn
            # from. Score every prompt at the base rate rather than upside down.
            rate = min(max(float(np.average(needed, weights=weight)), 1e-3), 1 - 1e-3)
            platt = (0.0, math.log(rate / (1 - rate)))
    coef = full_linear.coef_
    hashed, scale = encode_weights([float(v) * mix_linear for v in coef[: config.buckets]])
    return {
        "intercept": _round(float(full_linear.intercept_) * mix_linear),
        "dense": [
            _round(float(v) * config.dense_scale * mix_linear) for v in coef[config.buckets :]
        ],
        "hashed": hashed,
        "hashed_scale": _round(scale),
        "trees": _export_trees(full_trees, mix_trees),
        "platt": [_round(platt[0]), _round(platt[1])],
        "rows": len(feats),
    }


def _fit_trees(z: Any, target: Any, weight: Any, config: TrainConfig) -> Any:
    """Gradient-boosted trees over the dense cues: what a linear model misses (a long problem
    *with* many numbers is harder than either alone)."""
    if config.trees <= 0 or len(target) < 20:
        return None
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(
        n_estimators=config.trees,
        max_depth=config.tree_depth,
        learning_rate=0.05,
        subsample=0.8,
        random_state=0,
    )
    return model.fit(z, target, sample_weight=weight)


def _export_trees(model: Any, mix: float) -> dict[str, Any]:
    """Each tree as flat node lists; leaf values already multiplied by the learning rate and
    the mix, so the runtime adds them up."""
    if model is None:
        return {"base": 0.0, "trees": []}
    trees = []
    for estimator in model.estimators_[:, 0]:
        tree = estimator.tree_
        trees.append(
            {
                "feature": [int(f) for f in tree.feature],
                "threshold": [_round(float(t)) for t in tree.threshold],
                "left": [int(c) for c in tree.children_left],
                "right": [int(c) for c in tree.children_right],
                "value": [
                    _round(float(v) * model.learning_rate * mix) for v in tree.value[:, 0, 0]
                ],
            }
        )
    base = float(model.init_.constant_[0][0]) if hasattr(model.init_, "constant_") else 0.0
    return {"base": _round(base * mix), "trees": trees}


def _round(value: float) -> float:
    """Six significant digits: the last bits of a float differ between BLAS builds."""
    return float(f"{float(value):.6g}")

"""Can the v2 scorer be made to transfer better by asking for *invariance across sources*?

Four families of variants, each scored by the exact leave-one-source-out protocol of
``tiergate eval-router --loso`` (mean APGR over the seven sources, ``bootstrap.apgr_of`` per
group, a source's figure the mean of its groups). Unlike ``bench/v2_design_search.py`` the
held-out source is used for nothing: the inputs' mean and standard deviation, the group
centring, the target's standardisation, the projections and the pairs all come from the
training sources' trainable rows only (``training_exclusions`` never trained on, as in
``fit_v2``).

* ``shipped``: train_v2's design (blend target, ridge 0.3 per source, coordinate-wise median);
  the reference.
* ``project``: before the per-source ridge + median, remove the directions that tell the
  training sources apart: ``between`` = the top eigenvectors of the between-source scatter of
  the (standardised) inputs (rank at most sources - 1), ``inlp`` = iterative null-space
  projection with a shrunk LDA as the classifier (each round finds up to sources - 1
  discriminant directions, projects them out, and looks again). Over the embedding only
  (``emb``) or every input (``all``); k in {3, 5, 8, 16}.
* ``vrex``: one weight vector for every training source, minimising the mean per-source loss
  (weighted squared error over the source's unexplained variance, so a source's noise level
  does not count as variance) + lambda x the variance of those losses + the ridge penalty;
  preconditioned gradient descent from the pooled ridge solution (lambda = 0).
* ``pairs``: within-group pairs with different targets (a seeded sample per group), fitted on
  the pairs' input differences with the sign of the target difference: ridge per source then
  median (``pair-ridge``), logistic per source then median (``pair-logit``), or one logistic
  over every source's pairs, sources weighing the same (``pair-logit-pooled``).
* ``blend``: the shipped weights plus another family's, each scaled to unit score spread on the
  training rows (still one linear model over the same inputs), and a rank average of the two
  (not a linear model; reference only).

The *nested* figure: for each held-out source, the variant with the best mean over the six
other sources (each of those scored by a model trained without it and without the held-out
source) is chosen, then scored once on the held-out source.

Run:  python bench/v2_invariance_search.py [--out bench/results/v2-invariance-search.json]
A few minutes on 2 cores. Deterministic (seeded pair samples, no threads-dependent sums beyond
BLAS's last bits; figures are rounded to 4 decimals in the output).
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.scoring.embedding import DIMENSIONS
from gateway.scoring.features import last_user_text
from gateway.scoring.heuristic import ScorerWeights
from gateway.tools.scorer import sources
from gateway.tools.scorer.evaluate import v1_scores
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.train_v2 import design, target_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v2_design_search import groups_of, score_source

Array = NDArray[np.float64]
ALPHA = 0.3
PAIRS_PER_GROUP = 4000
KS = (3, 5, 8, 16)
BLENDS = ("vrex lambda=100", "pair-ridge alpha=1", "pair-logit alpha=0.03", "project inlp emb k=3")


Model = Callable[["Fold"], Array]


Target = Callable[[Sequence[Labelled]], Array]


def blend(group: Sequence[Labelled]) -> Array:
    """The shipped target (``train_v2``'s blend) of one group's rows."""
    return target_of(group, "blend")


class Data:
    """Everything that does not depend on the fold, computed on trainable rows only: per
    source, the sums for standardising, the group-centred ridge statistics of ``target`` and
    (with ``pairs``) the sampled within-group pairs the pairwise variants fit."""

    def __init__(
        self,
        items: Sequence[Labelled],
        x: Array,
        trainable: NDArray[np.bool_],
        target: Target = blend,
        *,
        pairs: bool = True,
    ) -> None:
        self.items = items
        self.x = x
        self.origins = sorted({i.origin for i in items})
        groups = np.array([i.group for i in items])
        origin = np.array([i.origin for i in items])
        d = x.shape[1]
        self.n: dict[str, float] = {}
        self.s1: dict[str, Array] = {}
        self.s2: dict[str, Array] = {}
        self.gram: dict[str, Array] = {}  # weighted, group-centred, raw inputs
        self.rhs: dict[str, Array] = {}
        self.var: dict[str, float] = {}  # weighted mean square of the target
        self.mean: dict[str, Array] = {}  # the source's mean input (raw)
        self.pair_d: dict[str, Array] = {}  # raw input differences of sampled pairs
        self.pair_t: dict[str, Array] = {}  # sign of the target difference
        self.pair_w: dict[str, Array] = {}  # weights (each group of the source the same; sum 1)
        for o in self.origins:
            rows = (origin == o) & trainable
            xs = x[rows]
            self.n[o] = float(rows.sum())
            self.s1[o] = xs.sum(axis=0)
            self.s2[o] = (xs * xs).sum(axis=0)
            self.mean[o] = xs.mean(axis=0)
            member = groups[rows]
            names = sorted(set(member))
            y = np.zeros(len(xs))
            xc = np.empty_like(xs)
            w = np.zeros(len(xs))
            dl, tl, wl = [], [], []
            for g in names:
                grows = member == g
                gitems = [items[k] for k in np.flatnonzero(rows)[grows]]
                y[grows] = target(gitems)
                xc[grows] = xs[grows] - xs[grows].mean(axis=0)
                w[grows] = 1.0 / (len(names) * grows.sum())
                if not pairs:
                    continue
                gi = np.flatnonzero(grows)
                rng = np.random.default_rng([0, zlib.crc32(g.encode())])
                a = rng.integers(0, len(gi), size=4 * PAIRS_PER_GROUP)
                b = rng.integers(0, len(gi), size=4 * PAIRS_PER_GROUP)
                keep = np.flatnonzero(y[gi[a]] != y[gi[b]])[:PAIRS_PER_GROUP]
                a, b = gi[a[keep]], gi[b[keep]]
                dl.append(xs[a] - xs[b])
                tl.append(np.sign(y[a] - y[b]))
                wl.append(np.full(len(keep), 1.0 / (len(names) * len(keep))))
            self.gram[o] = xc.T @ (xc * w[:, None])
            self.rhs[o] = xc.T @ (w * y)
            self.var[o] = float((w * y * y).sum())
            if pairs:
                self.pair_d[o] = np.vstack(dl)
                self.pair_t[o] = np.concatenate(tl)
                self.pair_w[o] = np.concatenate(wl)
        self.dims = d


class Fold:
    """A training set (every source but ``left_out``), standardised on its own rows."""

    def __init__(self, data: Data, left_out: frozenset[str]) -> None:
        self.data = data
        self.sources = [o for o in data.origins if o not in left_out]
        n = sum(data.n[o] for o in self.sources)
        m = sum(data.s1[o] for o in self.sources) / n
        sd = np.sqrt(np.maximum(sum(data.s2[o] for o in self.sources) / n - m * m, 0.0))
        sd[sd == 0] = 1.0
        self.inv = 1.0 / sd
        self.m = m
        inv = self.inv
        self.gram = {o: data.gram[o] * inv[:, None] * inv[None, :] for o in self.sources}
        self.rhs = {o: data.rhs[o] * inv for o in self.sources}
        self.means = np.array([(data.mean[o] - m) * inv for o in self.sources])
        self._cache: dict[str, Array] = {}

    def to_raw(self, coef: Array) -> Array:
        """Weights on the raw inputs (scores differ from the model's by a constant only)."""
        return coef * self.inv

    def coef(self, name: str, models: dict[str, Model]) -> Array:
        """Variant ``name``'s weights on the standardised inputs (computed once per fold)."""
        if name not in self._cache:
            self._cache[name] = models[name](self)
        return self._cache[name]

    # -- the shipped design, optionally in a projected space ---------------------------------

    def ridge_median(self, projection: Array | None = None, alpha: float = ALPHA) -> Array:
        d = self.data.dims
        coefs = []
        for o in self.sources:
            g, r = self.gram[o], self.rhs[o]
            if projection is not None:
                g = projection @ g @ projection
                r = projection @ r
            coefs.append(np.linalg.solve(g + alpha * np.eye(d), r))
        return np.asarray(np.median(np.array(coefs), axis=0))

    # -- projections ---------------------------------------------------------------------------

    def directions(self, method: str, scope: str, k: int) -> Array:
        """Orthonormal directions (columns) that tell the training sources apart."""
        d = self.data.dims
        span = DIMENSIONS if scope == "emb" else d
        means = self.means[:, :span]
        within = np.mean([self.gram[o][:span, :span] for o in self.sources], axis=0)
        shrink = 0.1 * float(np.trace(within)) / span
        basis = np.zeros((span, 0))
        while basis.shape[1] < k:
            p = np.eye(span) - basis @ basis.T
            centred = (means - means.mean(axis=0)) @ p
            between = centred.T @ centred / len(means)
            if method == "between":
                vals, vecs = np.linalg.eigh(between)
            else:
                sw = p @ within @ p + shrink * np.eye(span)
                chol = np.linalg.cholesky(sw)
                ci = np.linalg.inv(chol)
                vals, u = np.linalg.eigh(ci @ between @ ci.T)
                vecs = ci.T @ u
            order = np.argsort(-vals)
            top = vals[order[0]]
            if top <= 1e-10:
                break
            take = [j for j in order[: len(means) - 1] if vals[j] > 1e-8 * top]
            new = p @ vecs[:, take[: k - basis.shape[1]]]
            for col in new.T:
                col = col - basis @ (basis.T @ col)
                norm = float(np.linalg.norm(col))
                if norm > 1e-9:
                    basis = np.hstack([basis, (col / norm)[:, None]])
        out = np.zeros((d, basis.shape[1]))
        out[:span] = basis
        return out

    def projected(self, method: str, scope: str, k: int, alpha: float = ALPHA) -> Array:
        v = self.directions(method, scope, k)
        projection = np.eye(self.data.dims) - v @ v.T
        return projection @ self.ridge_median(projection, alpha)

    # -- V-REx ---------------------------------------------------------------------------------

    def vrex(self, lam: float, alpha: float = ALPHA, steps: int = 300) -> Array:
        d = self.data.dims
        a = [self.gram[o] / self.data.var[o] for o in self.sources]
        b = [self.rhs[o] / self.data.var[o] for o in self.sources]
        s = len(a)
        mean_a = np.mean(a, axis=0)
        mean_b = np.mean(b, axis=0)
        w: Array = np.asarray(np.linalg.solve(mean_a + alpha * np.eye(d), mean_b), np.float64)
        if lam == 0:
            return w

        def losses(v: Array) -> Array:
            return np.array([v @ ai @ v - 2 * bi @ v + 1.0 for ai, bi in zip(a, b, strict=True)])

        def objective(v: Array) -> float:
            ls = losses(v)
            return float(ls.mean() + lam * ls.var() + alpha * v @ v)

        def gradient(v: Array) -> Array:
            ls = losses(v)
            grads = np.array([2 * (ai @ v - bi) for ai, bi in zip(a, b, strict=True)])
            g: Array = grads.mean(axis=0) + lam * 2 * ((ls - ls.mean()) @ grads) / s
            return g + 2 * alpha * v

        pre = np.linalg.inv(2 * (mean_a + alpha * np.eye(d)))
        f = objective(w)
        step = 1.0
        for _ in range(steps):
            g = gradient(w)
            direction = -pre @ g
            while step > 1e-12:
                trial: Array = np.asarray(w + step * direction, np.float64)
                ft = objective(trial)
                if ft <= f + 1e-4 * step * float(g @ direction):
                    break
                step /= 2
            if step <= 1e-12 or f - ft < 1e-12:
                break
            w, f = trial, ft
            step = min(1.0, step * 2)
        return w

    # -- pairwise ------------------------------------------------------------------------------

    def pair_ridge(self, alpha: float) -> Array:
        d = self.data.dims
        coefs = []
        for o in self.sources:
            dz = self.data.pair_d[o] * self.inv
            w = self.data.pair_w[o]
            g = dz.T @ (dz * w[:, None])
            coefs.append(np.linalg.solve(g + alpha * np.eye(d), dz.T @ (w * self.data.pair_t[o])))
        return np.asarray(np.median(np.array(coefs), axis=0))

    def pair_logit(self, alpha: float, pooled: bool) -> Array:
        if pooled:
            dz = np.vstack([self.data.pair_d[o] * self.inv for o in self.sources])
            t = np.concatenate([self.data.pair_t[o] for o in self.sources])
            w = np.concatenate([self.data.pair_w[o] for o in self.sources]) / len(self.sources)
            return _logistic(dz, t, w, alpha)
        coefs = [
            _logistic(
                self.data.pair_d[o] * self.inv, self.data.pair_t[o], self.data.pair_w[o], alpha
            )
            for o in self.sources
        ]
        return np.asarray(np.median(np.array(coefs), axis=0))

    def spread(self, coef: Array) -> float:
        """The standard deviation of the model's (group-centred) score on the training rows,
        sources weighing the same."""
        return float(np.sqrt(np.mean([coef @ self.gram[o] @ coef for o in self.sources])))


def _logistic(d: Array, t: Array, w: Array, alpha: float) -> Array:
    """Weighted L2 logistic regression without intercept on (d, t in {-1, 1}), by Newton."""
    coef = np.zeros(d.shape[1])
    total = float(w.sum())
    for _ in range(25):
        margin = t * (d @ coef)
        p = 1.0 / (1.0 + np.exp(np.clip(margin, -50, 50)))  # sigmoid(-margin)
        grad = -(d.T @ (w * t * p)) / total + 2 * alpha * coef
        h = w * p * (1 - p)
        hess = d.T @ (d * h[:, None]) / total + 2 * alpha * np.eye(d.shape[1])
        step = np.linalg.solve(hess, grad)
        coef = coef - step
        if float(np.abs(step).max()) < 1e-8:
            break
    return coef


def variants() -> dict[str, Model]:
    out: dict[str, Model] = {"shipped": partial(Fold.ridge_median)}
    for method in ("between", "inlp"):
        for scope in ("emb", "all"):
            for k in KS:
                if method == "between" and k > 5:
                    continue  # the between-source scatter has rank <= sources - 1 (5)
                out[f"project {method} {scope} k={k}"] = partial(
                    Fold.projected, method=method, scope=scope, k=k
                )
    for scope in ("emb", "all"):
        out[f"project inlp {scope} k=3 alpha=1"] = partial(
            Fold.projected, method="inlp", scope=scope, k=3, alpha=1.0
        )
    for lam in (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0):
        out[f"vrex lambda={lam:g}"] = partial(Fold.vrex, lam=lam)
    for alpha in (0.1, 0.3, 1.0, 3.0):
        out[f"pair-ridge alpha={alpha:g}"] = partial(Fold.pair_ridge, alpha=alpha)
    for alpha in (0.01, 0.03, 0.1, 0.3):
        out[f"pair-logit alpha={alpha:g}"] = partial(Fold.pair_logit, alpha=alpha, pooled=False)
    out["pair-logit-pooled alpha=0.01"] = partial(Fold.pair_logit, alpha=0.01, pooled=True)
    return out


def blended(fold: Fold, models: dict[str, Model], a: str, b: str) -> Array:
    ca = fold.coef(a, models)
    cb = fold.coef(b, models)
    return ca / (fold.spread(ca) or 1.0) + cb / (fold.spread(cb) or 1.0)


def rank_average(x: Array, coefs: Sequence[Array], held: list[Any]) -> float:
    """The mean APGR of a source's groups, scoring each prompt by its mean within-group rank."""
    figures = []
    from gateway.tools.scorer.bootstrap import apgr_of

    for rows, weak, strong in held:
        ranks = [np.argsort(np.argsort(x[rows] @ c, kind="stable"), kind="stable") for c in coefs]
        figures.append(apgr_of(np.mean(ranks, axis=0).astype(np.float64), weak, strong))
    return float(np.mean(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/v2-invariance-search.json"))
    parser.add_argument("--only", default="", help="run only variants whose name has this")
    args = parser.parse_args()

    items = list(sources.every_source().items)
    dropped = sources.training_exclusions()
    trainable = np.array([i.id not in dropped for i in items])
    x = design(items)
    data = Data(items, x, trainable)
    origins = data.origins
    by_source = groups_of(items)
    print("data ready", file=sys.stderr)

    folds: dict[frozenset[str], Fold] = {}
    for o in origins:
        folds[frozenset({o})] = Fold(data, frozenset({o}))
        for i in origins:
            if i != o:
                folds.setdefault(frozenset({o, i}), Fold(data, frozenset({o, i})))

    models = variants()
    for a in BLENDS:
        if a in models:
            models[f"blend shipped + {a}"] = partial(blended, models=models, a="shipped", b=a)
    names = [n for n in models if args.only in n or n == "shipped"]

    outer: dict[str, dict[str, float]] = {}
    inner: dict[str, dict[tuple[str, str], float]] = {}
    for name in names:
        coefs = {key: fold.to_raw(fold.coef(name, models)) for key, fold in folds.items()}
        outer[name] = {o: score_source(x, coefs[frozenset({o})], by_source[o]) for o in origins}
        inner[name] = {
            (o, i): score_source(x, coefs[frozenset({o, i})], by_source[i])
            for o in origins
            for i in origins
            if i != o
        }
        print(f"{name}: {np.mean(list(outer[name].values())):.4f}", file=sys.stderr)

    # Rank averages (not linear; reference only): shipped with each family's representative.
    ranked_refs: dict[str, dict[str, float]] = {}
    for a in BLENDS:
        if a in names:
            ranked_refs[f"rank average shipped + {a}"] = {
                o: rank_average(
                    x,
                    [
                        folds[frozenset({o})].to_raw(folds[frozenset({o})].coef(n, models))
                        for n in ("shipped", a)
                    ],
                    by_source[o],
                )
                for o in origins
            }

    length = np.array([float(len(last_user_text(i.messages))) for i in items])
    v1 = np.array(v1_scores(items, ScorerWeights()))
    baselines = {
        "v1 scorer": {o: _score(v1, by_source[o]) for o in origins},
        "prompt length": {o: _score(length, by_source[o]) for o in origins},
    }

    def beats(per: dict[str, float]) -> list[str]:
        return [o for o in origins if all(per[o] > baselines[b][o] for b in baselines)]

    def nested(pool: Sequence[str]) -> dict[str, Any]:
        per: dict[str, Any] = {}
        for o in origins:
            chosen = max(
                pool, key=lambda n: float(np.mean([inner[n][(o, i)] for i in origins if i != o]))
            )
            per[o] = {"chosen": chosen, "apgr": round(outer[chosen][o], 4)}
        figures = {o: float(v["apgr"]) for o, v in per.items()}
        return {
            "mean": round(float(np.mean(list(figures.values()))), 4),
            "sources_beaten_on": beats(figures),
            "per_source": per,
        }

    families = {
        "all": names,
        "project": [n for n in names if n.startswith("project") or n == "shipped"],
        "vrex": [n for n in names if n.startswith("vrex")],
        "pairs": [n for n in names if n.startswith("pair")],
    }
    ranking = sorted(names, key=lambda n: -float(np.mean(list(outer[n].values()))))
    result: dict[str, Any] = {
        "benchmark": "v2 invariance search: leave-one-source-out mean APGR of each variant "
        "(held-out source used for nothing, standardisation included)",
        "baselines": {
            b: {"mean": round(float(np.mean(list(v.values()))), 4)}
            | {"per_source": {o: round(a, 4) for o, a in v.items()}}
            for b, v in baselines.items()
        },
        "variants": [
            {
                "variant": n,
                "mean": round(float(np.mean(list(outer[n].values()))), 4),
                "sources_beaten_on": beats(outer[n]),
                "per_source": {o: round(a, 4) for o, a in outer[n].items()},
            }
            for n in ranking
        ],
        "rank_averages": [
            {
                "variant": n,
                "mean": round(float(np.mean(list(v.values()))), 4),
                "sources_beaten_on": beats(v),
                "per_source": {o: round(a, 4) for o, a in v.items()},
            }
            for n, v in ranked_refs.items()
        ],
        "nested": {fam: nested(pool) for fam, pool in families.items() if pool},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    best = ranking[0]
    print(
        f"best {best}: {np.mean(list(outer[best].values())):.4f}; "
        f"nested (all) {result['nested']['all']['mean']}; wrote {args.out}"
    )


def _score(scores: Array, held: list[Any]) -> float:
    from gateway.tools.scorer.bootstrap import apgr_of

    return float(np.mean([apgr_of(scores[rows], weak, strong) for rows, weak, strong in held]))


if __name__ == "__main__":
    main()

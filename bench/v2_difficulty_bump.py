"""Is routing gain a *bump* in difficulty rather than a monotone function of it?

Under an item-response view, P(model m right on prompt i) = sigmoid(ability_m - difficulty_i),
so the strong model's gain over the weak one, sigmoid(a_s - d) - sigmoid(a_w - d), peaks at
middling difficulty and vanishes both for prompts every model gets right and for the hardest,
which the strong model misses too. A linear scorer routes the hardest first. This benchmark
predicts each prompt's difficulty with the shipped design's machinery (``train_v2``: inputs of
``gateway.scoring.v2``, group-centred; ridge 0.3 per source; coordinate-wise median) but a pure
``hardness`` target (minus the crowd's mean quality, the pair's mean where a source publishes
no crowd; standardised per group), then scores with a bump. Variants (18):

* ``shipped``: blend target, linear (the reference; reproduces 0.5726);
  ``hardness linear``: the hardness model, routing the hardest first.
* ``hardness bump z=c``: score = -(z - c)^2, z the predicted difficulty standardised over the
  held-out group's own prompts (unlabelled: a deployment sees its traffic), c in
  {0, 0.5, 1, 1.5, 2}; ``hardness bump q=p``: the centre at the p-quantile of the group's
  predicted difficulty, p in {0.6, 0.75, 0.9}.
* ``hardness irt s=k``: score = sigmoid(a_s - k z) - sigmoid(a_w - k z), the abilities solved
  so that, with z standard normal, the expected accuracies equal the training sources' mean
  weak and strong qualities (each source weighing the same; qualities scaled to [0, 1]);
  k in {1, 2, 4}.
* ``blend bump z=c``: the bump on the shipped blend score, c in {1, 2}.
* Two heads: ridge + median on the weak model's and on the strong model's quality (raw 0/1 or
  graded, scaled to [0, 1], not standardised), each prediction the training sources' mean
  level plus the group-centred linear part: ``heads strong-weak`` (the difference),
  ``heads strong*(1-weak)`` (clipped to [0.01, 0.99]), ``heads 1-weak`` (the weak head alone).

Protocol: the strict leave-one-source-out harness of ``bench/v2_invariance_search.py``
(``Data``/``Fold``: standardisation, centring, targets and fits from the training sources'
trainable rows only; the held-out source's labels used for nothing). The *nested* figure: for
each held-out source, the variant with the best mean over the six other sources (each scored by
a model trained without it and the held-out source) is chosen, then scored once on the held-out
source; over all 18 variants, and within the hardness bump family alone (linear + the five z
centres). ``oracle centre`` (reference only, NOT a deployable figure): per held-out source, the
best of the hardness linear / z-bump variants chosen with that source's labels.
``gain_by_difficulty_quintile`` (a diagnostic): the mean strong - weak quality per fifth of each
held-out source's prompts, ordered by predicted and (using labels) by true hardness: is the gain
a bump in either? A paired
bootstrap over prompts (1,000 resamples per group, ``bootstrap.resamples_for`` seed 0) gives the
difference in LOSO mean of the best variant and of the nested choice against the shipped design.

Run:  python bench/v2_difficulty_bump.py [--out bench/results/v2-difficulty-bump.json]
A few minutes on 2 cores (one embedding pass over the prompts, small solves, the bootstrap).
Deterministic (figures rounded to 4 decimals in the output).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.train_v2 import design, target_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v2_design_search import Held, groups_of
from v2_feature_search import baselines_of, beating, paired_bootstrap, score_of
from v2_invariance_search import Data, Fold, Target, blend

Array = NDArray[np.float64]
Raw = dict[str, Array]  # target -> raw score over every prompt (one training set)
Transform = Callable[[Raw, NDArray[np.int64], tuple[float, float]], Array]
CENTRES = (0.0, 0.5, 1.0, 1.5, 2.0)
QUANTILES = (0.6, 0.75, 0.9)
SLOPES = (1.0, 2.0, 4.0)


def scale_of(items: Sequence[Labelled]) -> float:
    """Qualities on a 1-10 grade (MT-Bench) are divided by 10; 0/1 and win rates stay."""
    top = max(max(i.weak, i.strong) for i in items)
    return 10.0 if top > 1.0 else 1.0


def quality(side: str) -> Target:
    def target(items: Sequence[Labelled]) -> Array:
        s = scale_of(items)
        return np.array([(i.weak if side == "weak" else i.strong) / s for i in items])

    return target


TARGETS: dict[str, Target] = {
    "blend": blend,
    "hardness": lambda g: target_of(g, "hardness"),
    "weak": quality("weak"),
    "strong": quality("strong"),
}


def levels(
    items: Sequence[Labelled], trainable: NDArray[np.bool_], left_out: frozenset[str]
) -> tuple[float, float]:
    """The training sources' mean weak and strong quality (scaled to [0, 1]; each source the
    mean of its groups, each source weighing the same)."""
    per: dict[str, list[tuple[float, float]]] = {}
    by_group: dict[str, list[Labelled]] = {}
    for i, t in zip(items, trainable, strict=True):
        if t and i.origin not in left_out:
            by_group.setdefault(i.group, []).append(i)
    for g in sorted(by_group):
        rows = by_group[g]
        s = scale_of(rows)
        w = float(np.mean([i.weak for i in rows])) / s
        st = float(np.mean([i.strong for i in rows])) / s
        per.setdefault(rows[0].origin, []).append((w, st))
    means = np.array([np.mean(v, axis=0) for v in per.values()])
    return float(means[:, 0].mean()), float(means[:, 1].mean())


def ability(p: float, slope: float) -> float:
    """a with E[sigmoid(a - slope * z)] = p for z standard normal (Gauss-Hermite, bisection)."""
    nodes, wts = np.polynomial.hermite_e.hermegauss(40)
    wts = wts / wts.sum()
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if float((wts / (1 + np.exp(-(mid - slope * nodes)))).sum()) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def zscore(v: Array) -> Array:
    sd = float(v.std())
    out: Array = (v - v.mean()) / (sd if sd > 0 else 1.0)
    return out


def sigmoid(v: Array) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-np.clip(v, -50.0, 50.0)))
    return out


def linear(target: str) -> Transform:
    def f(raw: Raw, rows: NDArray[np.int64], lv: tuple[float, float]) -> Array:
        out: Array = raw[target][rows]
        return out

    return f


def bump(target: str, centre: float) -> Transform:
    return lambda raw, rows, lv: -((zscore(raw[target][rows]) - centre) ** 2)


def bump_quantile(q: float) -> Transform:
    def f(raw: Raw, rows: NDArray[np.int64], lv: tuple[float, float]) -> Array:
        d = raw["hardness"][rows]
        out: Array = -np.abs(d - float(np.quantile(d, q)))
        return out

    return f


def irt(slope: float) -> Transform:
    def f(raw: Raw, rows: NDArray[np.int64], lv: tuple[float, float]) -> Array:
        z = slope * zscore(raw["hardness"][rows])
        return sigmoid(ability(lv[1], slope) - z) - sigmoid(ability(lv[0], slope) - z)

    return f


def heads(kind: str) -> Transform:
    def f(raw: Raw, rows: NDArray[np.int64], lv: tuple[float, float]) -> Array:
        w = np.clip(lv[0] + raw["weak"][rows] - raw["weak"][rows].mean(), 0.01, 0.99)
        s = np.clip(lv[1] + raw["strong"][rows] - raw["strong"][rows].mean(), 0.01, 0.99)
        out: Array
        if kind == "diff":
            out = (raw["strong"][rows] - raw["strong"][rows].mean()) - (
                raw["weak"][rows] - raw["weak"][rows].mean()
            )
        elif kind == "product":
            out = s * (1 - w)
        else:
            out = -raw["weak"][rows]
        return out

    return f


def variants() -> dict[str, Transform]:
    out: dict[str, Transform] = {"shipped": linear("blend"), "hardness linear": linear("hardness")}
    for c in CENTRES:
        out[f"hardness bump z={c:g}"] = bump("hardness", c)
    for q in QUANTILES:
        out[f"hardness bump q={q:g}"] = bump_quantile(q)
    for k in SLOPES:
        out[f"hardness irt s={k:g}"] = irt(k)
    for c in (1.0, 2.0):
        out[f"blend bump z={c:g}"] = bump("blend", c)
    out["heads strong-weak"] = heads("diff")
    out["heads strong*(1-weak)"] = heads("product")
    out["heads 1-weak"] = heads("weak")
    return out


def scores_on(transform: Transform, raw: Raw, held: Held, lv: tuple[float, float], n: int) -> Array:
    """A full-length score vector, filled on the held-out groups' rows (each group alone)."""
    out = np.zeros(n)
    for rows, _, _ in held:
        out[rows] = transform(raw, rows, lv)
    return out


def gain_by_quintile(key: Array, items: Sequence[Labelled], held: Held) -> list[float]:
    """Mean strong - weak quality (scaled to [0, 1]) in each fifth of ``key`` (easiest first),
    each group binned alone, the source's figure the mean of its groups."""
    per = []
    for rows, weak, strong in held:
        s = scale_of([items[int(k)] for k in rows])
        order = np.argsort(key[rows], kind="stable")
        per.append([float(((strong - weak)[b] / s).mean()) for b in np.array_split(order, 5)])
    return [round(float(v), 4) for v in np.mean(per, axis=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/v2-difficulty-bump.json"))
    parser.add_argument("--cache", type=Path, help="keep the input matrix in this .npy")
    args = parser.parse_args()

    items = list(sources.every_source().items)
    dropped = sources.training_exclusions()
    trainable = np.array([i.id not in dropped for i in items])
    if args.cache is not None and args.cache.exists():
        x = np.asarray(np.load(args.cache), dtype=np.float64)
    else:
        x = design(items)
        if args.cache is not None:
            np.save(args.cache, x)
    n = len(items)
    origins = sorted({i.origin for i in items})
    by_source = groups_of(items)
    keys = [frozenset({o}) for o in origins] + [
        frozenset({o, i}) for o in origins for i in origins if i < o
    ]
    stats = {t: Data(items, x, trainable, fn, pairs=False) for t, fn in TARGETS.items()}
    raw: dict[frozenset[str], Raw] = {}
    lvs: dict[frozenset[str], tuple[float, float]] = {}
    for key in keys:
        raw[key] = {}
        for t, st in stats.items():
            fold = Fold(st, key)
            raw[key][t] = x @ fold.to_raw(fold.ridge_median())
        lvs[key] = levels(items, trainable, key)
    print("fits ready", file=sys.stderr)

    models = variants()
    names = list(models)
    outer: dict[str, dict[str, float]] = {}
    inner: dict[str, dict[tuple[str, str], float]] = {}
    held_scores: dict[str, dict[str, Array]] = {}
    for name in names:
        f = models[name]
        held_scores[name] = {
            o: scores_on(f, raw[frozenset({o})], by_source[o], lvs[frozenset({o})], n)
            for o in origins
        }
        outer[name] = {o: score_of(held_scores[name][o], by_source[o]) for o in origins}
        inner[name] = {}
        for o in origins:
            for i in origins:
                if i != o:
                    key = frozenset({o, i})
                    s = scores_on(f, raw[key], by_source[i], lvs[key], n)
                    inner[name][(o, i)] = score_of(s, by_source[i])
        print(f"{name}: {np.mean(list(outer[name].values())):.4f}", file=sys.stderr)

    baselines = baselines_of(items, by_source, origins)

    def beats(per: dict[str, float]) -> list[str]:
        return beating(per, baselines, origins)

    def mean(per: dict[str, float]) -> float:
        return float(np.mean(list(per.values())))

    def nested(pool: Sequence[str]) -> tuple[dict[str, str], dict[str, Any]]:
        chosen = {
            o: max(
                pool, key=lambda v: float(np.mean([inner[v][(o, i)] for i in origins if i != o]))
            )
            for o in origins
        }
        figures = {o: outer[chosen[o]][o] for o in origins}
        return chosen, {
            "mean": round(mean(figures), 4),
            "beats_v1_and_length": len(beats(figures)),
            "sources_beaten_on": beats(figures),
            "per_source": {o: {"chosen": chosen[o], "apgr": round(figures[o], 4)} for o in origins},
        }

    bump_family = ["hardness linear", *(f"hardness bump z={c:g}" for c in CENTRES)]
    chosen_all, nested_all = nested(names)
    _, nested_bump = nested(bump_family)
    oracle_pick = {o: max(bump_family, key=lambda v: outer[v][o]) for o in origins}
    oracle = {o: outer[oracle_pick[o]][o] for o in origins}

    ranking = sorted(names, key=lambda v: -mean(outer[v]))
    best = next(v for v in ranking if v != "shipped")
    group = [i.group for i in items]
    shipped = held_scores["shipped"]
    nested_scores = {o: held_scores[chosen_all[o]][o] for o in origins}

    true_hardness = np.array([i.hardness for i in items])
    diagnostic = {
        o: {
            "by_loso_predicted_difficulty": gain_by_quintile(
                raw[frozenset({o})]["hardness"], items, by_source[o]
            ),
            "by_true_hardness_labels": gain_by_quintile(true_hardness, items, by_source[o]),
        }
        for o in origins
    }

    result: dict[str, Any] = {
        "benchmark": "v2 difficulty bump: leave-one-source-out mean APGR of scoring by a bump "
        "in predicted difficulty (held-out source's labels used for nothing)",
        "baselines": {
            b: {"mean": round(mean(v), 4), "per_source": {o: round(a, 4) for o, a in v.items()}}
            for b, v in baselines.items()
        },
        "training_levels_per_fold": {
            "+".join(sorted(k)): [round(v, 4) for v in lvs[k]] for k in keys if len(k) == 1
        },
        "variants": [
            {
                "variant": v,
                "mean": round(mean(outer[v]), 4),
                "beats_v1_and_length": len(beats(outer[v])),
                "sources_beaten_on": beats(outer[v]),
                "per_source": {o: round(a, 4) for o, a in outer[v].items()},
                "inner_mean": round(float(np.mean(list(inner[v].values()))), 4),
            }
            for v in ranking
        ],
        "nested": {"all variants": nested_all, "hardness linear + z bumps": nested_bump},
        "oracle_centre_reference_not_deployable": {
            "mean": round(mean(oracle), 4),
            "per_source": {
                o: {"chosen": oracle_pick[o], "apgr": round(oracle[o], 4)} for o in origins
            },
        },
        "gain_by_difficulty_quintile": {
            "what": "mean strong - weak quality (scaled to [0, 1]) per fifth of the prompts, "
            "easiest first: by the LOSO hardness model's prediction, and (reference, uses the "
            "labels) by the true hardness, which for gsm8k and mmlu (no crowd) is the pair's own "
            "mean, so its bump there is partly mechanical",
            "per_source": diagnostic,
        },
        "paired_bootstrap_vs_shipped": {
            "what": "LOSO mean minus the shipped design's, 1000 paired prompt resamples per "
            "group (seed 0)",
            f"best variant ({best})": paired_bootstrap(
                held_scores[best], shipped, by_source, group
            ),
            "nested choice (all variants)": paired_bootstrap(
                nested_scores, shipped, by_source, group
            ),
        },
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"best {best}: {mean(outer[best]):.4f}; nested {nested_all['mean']}; "
        f"oracle centre {mean(oracle):.4f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

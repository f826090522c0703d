"""How the v2 scorer's training design was chosen, and what that choice costs in honesty.

Every variant below is scored leave-one-source-out on the seven sources of
``tiergate eval-router --loso`` (mean APGR over the sources). The shipped design is the best of
them, so its figure is picked with the test sources in view; the *nested* figure removes that:
for each held-out source, the variant is chosen by its leave-one-source-out mean over the six
other sources only, then scored once on the held-out one. The nested mean is the honest estimate
of "this procedure on a benchmark it has never seen".

Variants: the target (``train_v2.target_of``: blend, weak_shortfall, hardness, gain), the ridge
penalty, one regression per group or per source, and how the regressions are combined (mean,
coordinate-wise median, mean kept only where every regression agrees on the sign, mean weighted
by the share that agrees). The inputs are standardised once over every prompt (the CLI
standardises on the training rows only; here only the penalty's scale can differ); everything
else is ``train_v2``'s own code.

Run:  python bench/v2_design_search.py [--out bench/results/v2-design-search.json]
About a minute on 2 cores (the embeddings of 20,190 prompts, then small solves).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.tools.scorer import sources
from gateway.tools.scorer.bootstrap import apgr_of
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.train_v2 import Target, design, ridge, target_of

Array = NDArray[np.float64]
TARGETS: tuple[Target, ...] = ("blend", "weak_shortfall", "hardness", "gain")
ALPHAS = (0.03, 0.1, 0.3, 1.0)
UNITS = ("group", "source")


def _median(c: Array) -> Array:
    return np.asarray(np.median(c, axis=0))


def _agreed(c: Array) -> Array:
    return np.asarray(c.mean(axis=0) * (np.abs(np.sign(c).sum(axis=0)) >= len(c)))


def _weighted(c: Array) -> Array:
    return np.asarray(c.mean(axis=0) * np.abs(np.sign(c).mean(axis=0)))


Held = list[tuple[NDArray[np.int64], Array, Array]]  # a source's groups: rows, weak, strong
Groups = dict[str, Held]
COMBINE: dict[str, Callable[[Array], Array]] = {
    "mean": lambda c: np.asarray(c.mean(axis=0)),
    "median": _median,
    "sign-agreed mean": _agreed,
    "agreement-weighted mean": _weighted,
}


def unit_fits(
    items: Sequence[Labelled], z: Array, trainable: NDArray[np.bool_], target: Target, alpha: float
) -> dict[str, dict[str, Array]]:
    """Per unit kind (group, source): each unit's ridge weights, trained on its own rows."""
    groups = np.array([i.group for i in items])
    origins = np.array([i.origin for i in items])
    y = np.zeros(len(items))
    centred = np.empty_like(z)
    for g in sorted(set(groups)):
        rows = groups == g
        y[rows] = target_of([i for i, r in zip(items, rows, strict=True) if r], target)
        centred[rows] = z[rows] - z[rows].mean(axis=0)
    out: dict[str, dict[str, Array]] = {}
    for unit, labels in (("group", groups), ("source", origins)):
        out[unit] = {}
        for name in sorted(set(labels)):
            rows = (labels == name) & trainable
            member = groups[rows]
            counts = {g: int((member == g).sum()) for g in set(member)}
            weight = np.array([1.0 / counts[g] for g in member])
            out[unit][str(name)] = ridge(centred[rows], y[rows], weight, alpha)
    return out


def groups_of(items: Sequence[Labelled]) -> Groups:
    """Per source: each group's rows and its weak and strong qualities."""
    out: Groups = {}
    for g in sorted({i.group for i in items}):
        rows = np.array([k for k, i in enumerate(items) if i.group == g])
        weak = np.array([items[k].weak for k in rows])
        strong = np.array([items[k].strong for k in rows])
        out.setdefault(items[int(rows[0])].origin, []).append((rows, weak, strong))
    return out


def score_source(
    z: Array, coef: Array, held: list[tuple[NDArray[np.int64], Array, Array]]
) -> float:
    """The mean APGR of a source's groups (the source's figure)."""
    return float(np.mean([apgr_of(z[rows] @ coef, weak, strong) for rows, weak, strong in held]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/v2-design-search.json"))
    args = parser.parse_args()

    items = list(sources.every_source().items)
    dropped = sources.training_exclusions()
    trainable = np.array([i.id not in dropped for i in items])
    x = design(items)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    z = (x - x.mean(axis=0)) / std
    origins = sorted({i.origin for i in items})
    by_source = groups_of(items)
    unit_origin = {i.group: i.origin for i in items} | {o: o for o in origins}

    def coef_without(fits: dict[str, Array], combine: str, left_out: set[str]) -> Array:
        kept = np.array([c for u, c in fits.items() if unit_origin[u] not in left_out])
        return COMBINE[combine](kept)

    # figure[variant][held out][also left out] = that source's APGR
    variants: dict[tuple[str, float, str, str], dict[str, float]] = {}
    inner: dict[tuple[str, float, str, str], dict[tuple[str, str], float]] = {}
    for target, alpha in itertools.product(TARGETS, ALPHAS):
        fits = unit_fits(items, z, trainable, target, alpha)
        for unit, combine in itertools.product(UNITS, COMBINE):
            key = (target, alpha, unit, combine)
            variants[key] = {
                o: score_source(z, coef_without(fits[unit], combine, {o}), by_source[o])
                for o in origins
            }
            inner[key] = {
                (o, i): score_source(z, coef_without(fits[unit], combine, {o, i}), by_source[i])
                for o in origins
                for i in origins
                if i != o
            }
        print(f"{target} alpha={alpha}: done", file=sys.stderr)

    # How one source's own regression ranks every source (the shipped target and penalty): the
    # diagonal is in-sample, the rest is how far what one benchmark teaches carries to another.
    own = unit_fits(items, z, trainable, "blend", 0.3)["source"]
    transfer = {s: {o: score_source(z, own[s], by_source[o]) for o in origins} for s in origins}
    means = {k: float(np.mean(list(v.values()))) for k, v in variants.items()}
    ranked = sorted(variants.items(), key=lambda kv: -float(np.mean(list(kv[1].values()))))
    nested: dict[str, dict[str, object]] = {}
    for o in origins:
        chosen = max(
            variants,
            key=lambda k: float(np.mean([inner[k][(o, i)] for i in origins if i != o])),
        )
        nested[o] = {"chosen": list(chosen), "apgr": variants[chosen][o]}
    nested_mean = float(np.mean([float(v["apgr"]) for v in nested.values()]))  # type: ignore[arg-type]
    best, best_figures = ranked[0]
    result = {
        "benchmark": "v2 training design: leave-one-source-out mean APGR of each variant",
        "variants": len(variants),
        "best": {"variant": list(best), "mean": float(np.mean(list(best_figures.values())))}
        | {"per_source": best_figures},
        "median_of_variants": float(
            np.median([np.mean(list(v.values())) for v in variants.values()])
        ),
        "nested": {"mean": nested_mean, "per_source": nested},
        "transfer": {
            "what": "APGR on each source (inner keys) of one regression trained on one source "
            "alone (outer keys); target blend, penalty 0.3",
            "apgr": transfer,
        },
        "top": [
            {"variant": list(k), "mean": float(np.mean(list(v.values()))), "per_source": v}
            for k, v in ranked[:15]
        ],
        "all": [{"variant": list(k), "mean": float(np.mean(list(v.values())))} for k, v in ranked],
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"best {best}: {means[best]:.4f}; nested {nested_mean:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()

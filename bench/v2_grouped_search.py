"""Two leave-one-source-out designs for the v2 scorer not tried before: medians *grouped by task
shape*, and *many model pairs* per source instead of one.

Both keep the shipped inputs and the shipped per-source ridge (blend target, penalty 0.3, inputs
standardised and group-centred) and change only which regressions are fitted and how their
weights are combined. Everything is scored by the strict protocol of
``bench/v2_invariance_search.py`` (its ``Data`` and ``Fold``: standardisation, centring and
fitting from the training sources' trainable rows only; the held-out source used for nothing
but its own unlabelled prompts where a variant says so), always on the held-out source's
ORIGINAL weak/strong pair(s).

1. **Shape-grouped medians.** A prompt is *closed-form* when (rule fixed before any scoring,
   from the prompt's text alone) it has at least two lettered answer-option lines
   (``A)``/``A.``/``(A)``), or an ``Answer:`` slot in its last 40 characters, or opens with
   "Write a (python) function", or contains a digit and ends with a question asking for a
   quantity ("how many / how much / how long / how far / how old / what is the total / what
   percentage / what was the total ...?"); otherwise *open-ended*. A source's shape is the
   majority shape of its own (unlabelled) prompts. A held-out prompt is scored with the median
   (or mean) of the weights of the training sources of its shape (per prompt: the prompt's own
   shape; per source: the held-out source's majority shape); a shape with fewer than 2 training
   sources falls back to the shipped median of all of them. ``blend``: half the group's median
   plus half the all-source median.
2. **Many pairs.** Where a source publishes more models than its pair (RouterBench: eleven
   models' 0/1; MT-Bench: GPT-4's grades of Mixtral, GPT-4 and two routers, martian and unify;
   AlpacaEval: the CoT GPT-4-turbo judge's win probability against the GPT-4-turbo reference for
   ten models with every prompt judged, the reference itself at 0.5), one regression is fitted
   per (source, pair): the source's original pair(s) always, plus the most separated other
   pairs up to k per source. Separation of models A (weaker) and B: the paired effect size
   mean(q_B - q_A) / sd(q_B - q_A) over the source's trainable prompts; only pairs with at least
   0.2 count. With a target that reads only the weak model (``blend``, ``weak_shortfall``) two
   pairs with the same weak model are the same regression, so each weak model counts once (with
   its most separated partner). The pairs' weights are combined by the median within a source
   first, then by the median across sources. GSM8K and MMLU publish only their pair.

The *nested* figure: for each held-out source, the variant with the best mean over the six
other sources (each scored by a model trained without it and without the held-out source) is
chosen, then scored once on the held-out source. Paired bootstraps over prompts (1,000
resamples per group, seed 0) compare variants with the shipped design.

Run:  python bench/v2_grouped_search.py [--out bench/results/v2-grouped-search.json]
Under a minute on 2 cores (30-45 s: the embeddings of 20,190 prompts, small solves, the
bootstraps; ``--cache x.npy`` keeps the inputs for a rerun). Deterministic: two runs gave
byte-identical JSON (figures rounded to 4 decimals).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.scoring.features import last_user_text
from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import SHARED_DATA, Labelled, shared_data
from gateway.tools.scorer.train_v2 import design, target_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v2_design_search import Held, groups_of
from v2_feature_search import baselines_of, beating, paired_bootstrap, score_of
from v2_invariance_search import ALPHA, Data, Fold

Array = NDArray[np.float64]
MT_BENCH_PAIR = SHARED_DATA / "routellm" / "mt_bench_judgements.jsonl"
MIN_SEPARATION = 0.2
REFERENCE = "reference (gpt4_1106_preview, 0.5)"

# -- 1. shape --------------------------------------------------------------------------------

_OPTION = re.compile(r"(?m)^\s*\(?[A-E][.)]\s")
_CODE = re.compile(r"^\s*write a (?:python )?function\b", re.IGNORECASE)
_QUANTITY = re.compile(
    r"\b(?:how many|how much|how long|how far|how old|what is the total|what percentage|"
    r"what was the total)\b[^?]*\?\s*$",
    re.IGNORECASE,
)


def closed_form(text: str) -> bool:
    """The shape rule (module docstring): answer options, an answer slot, a function to write
    or a quantity to compute."""
    stripped = text.rstrip()
    return (
        len(_OPTION.findall(text)) >= 2
        or "answer:" in stripped[-40:].lower()
        or _CODE.search(text) is not None
        or (any(c.isdigit() for c in text) and _QUANTITY.search(stripped) is not None)
    )


# -- 2. the published models' qualities --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """One source's prompts (rows of ``items``, one per prompt) and every published model's
    quality on each (nan where missing); ``original``: the (weak, strong) names of its pairs."""

    rows: NDArray[np.int64]
    quality: dict[str, Array]
    original: tuple[tuple[str, str], ...]


def published(items: Sequence[Labelled]) -> dict[str, Published]:
    """RouterBench's, MT-Bench's and AlpacaEval's published models, per source."""
    index = {(i.origin, i.id): k for k, i in enumerate(items)}
    by: defaultdict[str, defaultdict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    with gzip.open(shared_data(sources.ROUTERBENCH), "rt", encoding="utf-8") as stream:
        for line in stream:
            raw = json.loads(line)
            origin = "winogrande" if raw["source"] == "winograde" else raw["source"]
            for model, value in raw["models"].items():
                by[origin][model][index[(origin, str(raw["id"]))]] = float(value)
    turns: defaultdict[tuple[str, int], list[float]] = defaultdict(list)
    for path in (shared_data(MT_BENCH_PAIR), shared_data(sources.MT_BENCH_ALL)):
        for line in path.read_text(encoding="utf-8").splitlines():
            raw = json.loads(line)
            if raw["score"] >= 0:
                turns[(raw["model"], int(raw["question_id"]))].append(float(raw["score"]))
    for (model, question), grades in turns.items():
        row = index.get(("mt_bench", f"mtbench-{question}"))
        if row is not None and len(grades) == 2:
            by["mt_bench"][model][row] = statistics.fmean(grades)
    prompt_row = {
        i.messages[-1].content: k for k, i in enumerate(items) if i.group == "alpaca_mixtral"
    }
    with gzip.open(shared_data(sources.ALPACA_EVAL), "rt", encoding="utf-8") as stream:
        for line in stream:
            raw = json.loads(line)
            if raw["annotator"] == sources.ALPACA_ANNOTATOR and raw["model"] != "gpt4_1106_preview":
                by["alpaca_eval"][raw["model"]][prompt_row[raw["prompt"]]] = raw["p_model_wins"]
    by["alpaca_eval"][REFERENCE] = dict.fromkeys(prompt_row.values(), 0.5)
    original = {
        "alpaca_eval": (
            ("Mixtral-8x7B-Instruct-v0.1", REFERENCE),
            ("Mistral-7B-Instruct-v0.2", REFERENCE),
        ),
        "mt_bench": (("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"),),
    }
    out: dict[str, Published] = {}
    for origin, models in sorted(by.items()):
        rows = np.array(sorted(set().union(*(m.keys() for m in models.values()))))
        quality = {
            name: np.array([np.nan if m.get(r) is None else float(m[r]) for r in rows])
            for name, m in sorted(models.items())
        }
        if origin == "alpaca_eval":  # a model not judged on every prompt is left out
            quality = {n: q for n, q in quality.items() if not np.isnan(q).any()}
        pair = (("mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"),)
        out[origin] = Published(rows, quality, original.get(origin, pair))
    return out


PairTarget = Literal["blend", "weak_shortfall", "gain+hardness"]


def target(group: Sequence[Labelled], kind: PairTarget) -> Array:
    if kind == "gain+hardness":
        return target_of(group, "gain") + target_of(group, "hardness")
    return target_of(group, kind)


def pairs_of(
    source: Published, trainable: NDArray[np.bool_], k: int, kind: PairTarget
) -> list[dict[str, Any]]:
    """The extra pairs of one source (module docstring's rule), most separated first."""
    ok = trainable[source.rows]
    weak_only = kind != "gain+hardness"
    taken = {w if weak_only else (w, s) for w, s in source.original}
    candidates: dict[object, dict[str, Any]] = {}
    for a in sorted(source.quality):
        for b in sorted(source.quality):
            both = ok & ~np.isnan(source.quality[a]) & ~np.isnan(source.quality[b])
            d = source.quality[b][both] - source.quality[a][both]
            if a == b or d.mean() <= 0 or d.std() == 0:
                continue
            sep = round(float(d.mean() / d.std()), 4)
            key = a if weak_only else (a, b)
            if sep < MIN_SEPARATION or key in taken:
                continue
            if key not in candidates or sep > candidates[key]["separation"]:
                candidates[key] = {"weak": a, "strong": b, "separation": sep}
    ranked = sorted(candidates.values(), key=lambda p: (-p["separation"], p["weak"], p["strong"]))
    return ranked[: max(0, k - len(source.original))]


@dataclass(frozen=True, slots=True)
class Unit:
    """One (source, pair) regression's statistics on the raw inputs (group-centred, per row)."""

    origin: str
    gram: Array
    rhs: Array


def pair_units(
    items: Sequence[Labelled],
    x: Array,
    trainable: NDArray[np.bool_],
    pubs: dict[str, Published],
    k: int,
    kind: PairTarget,
) -> tuple[list[Unit], dict[str, list[dict[str, Any]]]]:
    """Every source's original groups plus its extra pairs, as ridge statistics."""
    units: list[Unit] = []

    def add(origin: str, rows: NDArray[np.int64], group: Sequence[Labelled]) -> None:
        xc = x[rows] - x[rows].mean(axis=0)
        units.append(Unit(origin, xc.T @ xc / len(rows), xc.T @ target(group, kind) / len(rows)))

    for g in sorted({i.group for i in items}):
        rows = np.array([r for r, i in enumerate(items) if i.group == g and trainable[r]])
        add(items[int(rows[0])].origin, rows, [items[r] for r in rows])
    chosen: dict[str, list[dict[str, Any]]] = {}
    for origin, pub in pubs.items():
        chosen[origin] = pairs_of(pub, trainable, k, kind)
        for pair in chosen[origin]:
            qa, qb = pub.quality[pair["weak"]], pub.quality[pair["strong"]]
            keep = trainable[pub.rows] & ~np.isnan(qa) & ~np.isnan(qb)
            rows = pub.rows[keep]
            group = [
                replace(items[r], weak=float(a), strong=float(b))
                for r, a, b in zip(rows, qa[keep], qb[keep], strict=True)
            ]
            add(origin, rows, group)
    return units, chosen


# -- the variants --------------------------------------------------------------------------------

Combine = Callable[[Array], Array]


def median(c: Array) -> Array:
    return np.asarray(np.median(c, axis=0))


def mean(c: Array) -> Array:
    return np.asarray(c.mean(axis=0))


@dataclass(frozen=True, slots=True)
class Variant:
    pairs: tuple[int, PairTarget] | None = None  # (k, target); None: the shipped one pair
    shape: Literal["none", "prompt", "source"] = "none"
    within: Combine = median  # within a shape group
    blend: bool = False  # half the group's median, half the all-source median


VARIANTS: dict[str, Variant] = {
    "shipped": Variant(),
    "shape per prompt, median": Variant(shape="prompt"),
    "shape per source, median": Variant(shape="source"),
    "shape per prompt, mean": Variant(shape="prompt", within=mean),
    "shape per source, mean": Variant(shape="source", within=mean),
    "shape per prompt, 0.5 group + 0.5 all": Variant(shape="prompt", blend=True),
    "shape per source, 0.5 group + 0.5 all": Variant(shape="source", blend=True),
    "pairs k=3 (blend)": Variant(pairs=(3, "blend")),
    "pairs k=5 (blend)": Variant(pairs=(5, "blend")),
    "pairs k=10 (blend)": Variant(pairs=(10, "blend")),
    "pairs k=5 (gain + hardness)": Variant(pairs=(5, "gain+hardness")),
    "pairs k=10 (weak shortfall, no crowd)": Variant(pairs=(10, "weak_shortfall")),
    "pairs k=5 (blend) + shape per source, median": Variant(pairs=(5, "blend"), shape="source"),
}


class Scorer:
    """The held-out scores of every variant in every fold (one fold = a set of held-out
    sources)."""

    def __init__(self, items: Sequence[Labelled], x: Array, trainable: NDArray[np.bool_]) -> None:
        self.items, self.x = items, x
        self.data = Data(items, x, trainable, pairs=False)
        self.pubs = published(items)
        self.closed = np.array([closed_form(last_user_text(i.messages)) for i in items])
        origin = np.array([i.origin for i in items])
        self.share = {o: float(self.closed[origin == o].mean()) for o in self.data.origins}
        self.trainable = trainable
        self.units: dict[tuple[int, PairTarget], list[Unit]] = {}
        self.chosen: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def units_of(self, pairs: tuple[int, PairTarget]) -> list[Unit]:
        """The (source, pair) regressions' statistics for ``pairs`` (built once)."""
        if pairs not in self.units:
            units, chosen = pair_units(self.items, self.x, self.trainable, self.pubs, *pairs)
            self.units[pairs] = units
            self.chosen[f"k={pairs[0]} ({pairs[1]})"] = chosen
        return self.units[pairs]

    def per_source(self, fold: Fold, variant: Variant) -> dict[str, Array]:
        """Each training source's weights on the fold's standardised inputs."""
        penalty = ALPHA * np.eye(self.data.dims)

        def solve(gram: Array, rhs: Array) -> Array:
            return np.asarray(np.linalg.solve(gram + penalty, rhs), dtype=np.float64)

        if variant.pairs is None:
            return {o: solve(fold.gram[o], fold.rhs[o]) for o in fold.sources}
        inv = fold.inv
        units = self.units_of(variant.pairs)
        return {
            o: median(
                np.array(
                    [
                        solve(u.gram * inv[:, None] * inv[None, :], u.rhs * inv)
                        for u in units
                        if u.origin == o
                    ]
                )
            )
            for o in fold.sources
        }

    def scores(self, left_out: frozenset[str], variant: Variant) -> Array:
        """Every prompt's score by the variant trained without ``left_out`` (only the
        held-out sources' rows are read)."""
        fold = Fold(self.data, left_out)
        coefs = self.per_source(fold, variant)
        every = median(np.array(list(coefs.values())))
        if variant.shape == "none":
            return self.x @ fold.to_raw(every)

        def of_shape(closed: bool) -> Array:
            group = [c for o, c in coefs.items() if (self.share[o] > 0.5) == closed]
            if len(group) < 2:
                return every
            combined = variant.within(np.array(group))
            return 0.5 * combined + 0.5 * every if variant.blend else combined

        closed_scores = self.x @ fold.to_raw(of_shape(True))
        open_scores = self.x @ fold.to_raw(of_shape(False))
        if variant.shape == "prompt":
            return np.where(self.closed, closed_scores, open_scores)
        # per source: every held-out prompt by its own source's majority shape
        origin = [i.origin for i in self.items]
        source_closed = np.array([self.share[o] > 0.5 for o in origin])
        return np.where(source_closed, closed_scores, open_scores)


# -- main ----------------------------------------------------------------------------------------


def summary(
    per: dict[str, float], beats: Callable[[dict[str, float]], list[str]]
) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(list(per.values()))), 4),
        "beats_v1_and_length": len(beats(per)),
        "sources_beaten_on": beats(per),
        "per_source": {o: round(a, 4) for o, a in per.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/v2-grouped-search.json"))
    parser.add_argument("--cache", type=Path, help="keep the input matrix in this .npy")
    args = parser.parse_args()

    items = list(sources.every_source().items)
    dropped = sources.training_exclusions()
    trainable = np.array([i.id not in dropped for i in items])
    if args.cache is not None and args.cache.exists():
        x = np.load(args.cache)
    else:
        x = design(items)
        if args.cache is not None:
            np.save(args.cache, x)
    scorer = Scorer(items, x, trainable)
    origins = scorer.data.origins
    by_source: dict[str, Held] = groups_of(items)
    print("data ready", file=sys.stderr)

    outer: dict[str, dict[str, float]] = {}
    inner: dict[str, dict[tuple[str, str], float]] = {}
    held: dict[str, dict[str, Array]] = {}
    keys = [frozenset({o}) for o in origins] + [
        frozenset({o, i}) for o in origins for i in origins if i < o
    ]
    for name, variant in VARIANTS.items():
        scores = {key: scorer.scores(key, variant) for key in keys}
        held[name] = {o: scores[frozenset({o})] for o in origins}
        outer[name] = {o: score_of(held[name][o], by_source[o]) for o in origins}
        inner[name] = {
            (o, i): score_of(scores[frozenset({o, i})], by_source[i])
            for o in origins
            for i in origins
            if i != o
        }
        print(f"{name}: {np.mean(list(outer[name].values())):.4f}", file=sys.stderr)

    baselines = baselines_of(items, by_source, origins)
    group = [i.group for i in items]

    def beats(per: dict[str, float]) -> list[str]:
        return beating(per, baselines, origins)

    def compare(scores: dict[str, Array]) -> dict[str, Any]:
        return paired_bootstrap(scores, held["shipped"], by_source, group)

    def nested(pool: Sequence[str]) -> dict[str, Any]:
        chosen = {
            o: max(
                pool, key=lambda n: float(np.mean([inner[n][(o, i)] for i in origins if i != o]))
            )
            for o in origins
        }
        figures = {o: outer[chosen[o]][o] for o in origins}
        out = summary(figures, beats)
        out["chosen"] = chosen
        out["vs_shipped"] = compare({o: held[chosen[o]][o] for o in origins})
        return out

    def average(name: str) -> float:
        return float(np.mean(list(outer[name].values())))

    ideas = {
        "shape": [n for n in VARIANTS if n.startswith("shape")],
        "pairs": [n for n in VARIANTS if n.startswith("pairs")],
    }
    best = {idea: max(pool, key=average) for idea, pool in ideas.items()}
    originals = {o: scorer.scores(frozenset({o}), Variant(pairs=(1, "blend"))) for o in origins}
    result: dict[str, Any] = {
        "benchmark": "v2 grouped search: leave-one-source-out mean APGR of shape-grouped medians "
        "and many-pair regressions (held-out source used for nothing but its unlabelled prompts' "
        "shape, standardisation included; scored on its original pair)",
        "check": {
            "shipped reproduces eval-router --loso (0.5726)": round(average("shipped"), 4),
            "pairs k=1 (the original pairs only, so the shipped design)": round(
                float(np.mean([score_of(s, by_source[o]) for o, s in originals.items()])), 4
            ),
        },
        "closed_form_share": {o: round(s, 4) for o, s in scorer.share.items()},
        "extra_pairs": scorer.chosen,
        "baselines": {b: summary(v, beats) for b, v in baselines.items()},
        "variants": [
            {"variant": n} | summary(outer[n], beats)
            for n in sorted(VARIANTS, key=lambda n: (-average(n), n))
        ],
        "best_per_source_in_hindsight": summary(
            {o: max(outer[n][o] for n in VARIANTS) for o in origins}, beats
        ),
        "paired_bootstrap_vs_shipped": {
            f"best {idea} variant ({n})": compare(held[n]) for idea, n in best.items()
        },
        "nested": {
            "all variants and shipped": nested(list(VARIANTS)),
            "shape variants only": nested(ideas["shape"]),
            "pairs variants only": nested(ideas["pairs"]),
        },
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"shipped {average('shipped'):.4f}; best {best}; "
        f"nested {result['nested']['all variants and shipped']['mean']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

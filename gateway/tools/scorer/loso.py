"""Leave-one-source-out evaluation (``tiergate eval-router --loso``): for each source, a model
trained on every other source scores the held-out one, so no figure comes from a benchmark the
model has seen. Each group (benchmark pair) of the held-out source gets its APGR with a seeded
bootstrap 95 % interval, next to the random, prompt-length, v1 and oracle baselines.

A *source* is what is held out as one (``Labelled.origin``: a line's ``source`` field, else its
benchmark, else its file's name); a source may hold several groups (AlpacaEval: the same
prompts judged for two weak models), reported each on its own. Prompts whose id is in
``exclude`` are never trained on (RouteLLM's ``overlap_drop.tsv``) but are still scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.scoring.v2 import parse_v2
from gateway.tools.scorer.bootstrap import apgr_of, interval, resamples_for
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.train import dumps
from gateway.tools.scorer.train_v2 import DEFAULT_CONFIG, V2Config, fit_v2

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Fold:
    held_out: str
    trained_on: tuple[str, ...]  # the sources of the training rows
    training_rows: int


@dataclass(frozen=True, slots=True)
class RouterFigure:
    name: str
    apgr: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class GroupFigures:
    group: str
    source: str
    prompts: int
    weak_quality: float
    strong_quality: float
    routers: tuple[RouterFigure, ...]


def folds_of(items: Sequence[Labelled], exclude: frozenset[str]) -> list[tuple[Fold, list[int]]]:
    """Per source: the fold and the indices of its training rows."""
    out = []
    for source in sorted({i.origin for i in items}):
        train = [k for k, i in enumerate(items) if i.origin != source and i.id not in exclude]
        trained_on = tuple(sorted({items[k].origin for k in train}))
        out.append((Fold(source, trained_on, len(train)), train))
    return out


def v2_scores(
    items: Sequence[Labelled],
    x: NDArray[np.float64],
    exclude: frozenset[str],
    config: V2Config = DEFAULT_CONFIG,
    progress: Progress = lambda _m: None,
) -> tuple[list[float], list[Fold]]:
    """Every prompt's v2 score from the model trained without its source."""
    scores = [0.0] * len(items)
    folds = []
    for fold, train in folds_of(items, exclude):
        if not train:
            raise ValueError(
                f"leave-one-source-out needs at least two sources; only {fold.held_out!r} here "
                f"(name sources with a 'source' or 'benchmark' field, or use several files)"
            )
        progress(f"v2: held out {fold.held_out}, training on {fold.training_rows} prompts")
        artifact = fit_v2([items[k] for k in train], x[train], config)
        scorer = parse_v2(dumps(artifact), f"without {fold.held_out}")
        for k, item in enumerate(items):
            if item.origin == fold.held_out:
                scores[k] = scorer.probability(x[k])
        folds.append(fold)
    return scores, folds


def learned_scores(
    items: Sequence[Labelled], exclude: frozenset[str], progress: Progress = lambda _m: None
) -> list[float]:
    """The learned scorer (``train-scorer``'s default kind), retrained per held-out source."""
    from gateway.scoring.learned import parse_artifact
    from gateway.tools.scorer.train import TrainConfig, featurize, fit

    config = TrainConfig()
    feats = featurize(items, config.buckets)
    scores = [0.0] * len(items)
    for fold, train in folds_of(items, exclude):
        progress(f"learned: held out {fold.held_out}, training on {fold.training_rows} prompts")
        artifact = fit([items[k] for k in train], [feats[k] for k in train], config)
        scorer = parse_artifact(dumps(artifact), f"without {fold.held_out}")
        for k, item in enumerate(items):
            if item.origin == fold.held_out:
                scores[k] = scorer.probability(feats[k])
    return scores


def figures(
    items: Sequence[Labelled],
    routers: Mapping[str, Sequence[float]],
    resamples: int = 1000,
    seed: int = 0,
) -> list[GroupFigures]:
    """Per group: each router's APGR (aligned with ``items``) and its bootstrap interval."""
    out = []
    for group in sorted({i.group for i in items}):
        rows = [k for k, i in enumerate(items) if i.group == group]
        weak = np.array([items[k].weak for k in rows])
        strong = np.array([items[k].strong for k in rows])
        if weak.sum() == strong.sum():
            raise ValueError(
                f"group {group!r}: the weak and the strong model have the same mean quality, "
                f"so PGR is undefined there"
            )
        draws = resamples_for(group, len(rows), resamples, seed)
        named = {
            **{name: np.array([scores[k] for k in rows]) for name, scores in routers.items()},
            "random": np.zeros(len(rows)),
            "oracle": strong - weak,
        }
        figures_ = []
        for name, scores in named.items():
            span = interval(scores, weak, strong, draws)
            figures_.append(RouterFigure(name, apgr_of(scores, weak, strong), span.low, span.high))
        sources = sorted({items[k].origin for k in rows})
        out.append(
            GroupFigures(
                group=group,
                source=", ".join(sources),
                prompts=len(rows),
                weak_quality=float(weak.mean()),
                strong_quality=float(strong.mean()),
                routers=tuple(figures_),
            )
        )
    return out


def source_means(groups: Sequence[GroupFigures]) -> dict[str, dict[str, float]]:
    """Per router, per source: the mean APGR of the source's groups."""
    out: dict[str, dict[str, list[float]]] = {}
    for g in groups:
        for r in g.routers:
            out.setdefault(r.name, {}).setdefault(g.source, []).append(r.apgr)
    return {
        name: {source: sum(v) / len(v) for source, v in by_source.items()}
        for name, by_source in out.items()
    }


def summary(
    groups: Sequence[GroupFigures], candidate: str, rivals: Sequence[str]
) -> dict[str, Any]:
    """The mean APGR over sources per router, and on how many sources ``candidate`` beats
    every one of ``rivals``."""
    means = source_means(groups)
    sources = sorted(means[candidate])
    beats = [s for s in sources if all(means[candidate][s] > means[r][s] for r in rivals)]
    return {
        "sources": len(sources),
        "mean_apgr": {name: round(sum(v.values()) / len(v), 4) for name, v in means.items()},
        "per_source": {name: {s: round(a, 4) for s, a in v.items()} for name, v in means.items()},
        "candidate": candidate,
        "beats": rivals,
        "sources_beaten_on": beats,
    }

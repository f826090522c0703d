"""How much can learning each source's *level* add to a static base on the RouterBench stream?

The prequential RouterBench line of the routing issue asks the adaptive layer to beat the
static v2 (APGR 0.606, in-sample: v2 was trained on these rows). APGR is taken over the pooled
stream, so a layer can gain in two ways: by reordering prompts *within* a source (which the
neighbours' labels do not do well: ``bench/adaptive_question_neighbours.py``), or by moving
whole sources up or down against each other (their *levels*: v2 is fitted on group-centred
targets, so its levels across sources are not fitted at all). This script bounds the second way
while keeping the base's order inside each source exactly:

* ``oracle mean``: each source shifted so that its mean score equals its mean revealed label
  (the levels known in advance);
* ``oracle best``: the two shifts (MBPP, Winogrande against ARC-C) that maximise the pooled
  APGR, searched on a grid of 0.05 in [-0.5, 0.5] with the labels in view (an upper bound);
* ``online prior p``: each row's source known exactly (no embedding needed), its shift the mean
  residual ``label - base`` of that source's earlier rows, shrunk by ``p`` pseudo-rows: what
  a level learner can do prequentially at best.

Bases: the shipped v2 and, where given, a v2 trained on the RouteLLM pairs only (a base that
never saw the stream: the deployment's case).

Run (about a minute):
    tiergate export-labels routerbench --shuffle-seed 0 --out /tmp/preq/routerbench.jsonl
    tiergate export-labels routellm_trainable --shuffle-seed 0 --out /tmp/preq/routellm.jsonl
    tiergate train-scorer --kind v2 /tmp/preq/routellm.jsonl --out /tmp/preq/v2-routellm.json
    python bench/adaptive_levels_ceiling.py --out bench/results/adaptive-levels-ceiling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.tools.scorer.labels import read_labels
from gateway.tools.scorer.prequential import _Reveal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive_prequential_dev import policy_scores

from gateway.tools.scorer.quality import apgr, curve

Array = NDArray[np.float64]
PRIORS = (1, 10, 30, 100)
GRID = np.round(np.linspace(-0.5, 0.5, 21), 2)


class Rows:
    def __init__(self, path: Path) -> None:
        self.items = list(read_labels([path]).items)
        reveal = _Reveal()
        self.label = np.array([reveal(i) for i in self.items])
        self.weak = np.array([i.weak for i in self.items])
        self.strong = np.array([i.strong for i in self.items])
        self.group = np.array([i.group for i in self.items])
        self.groups = sorted(set(self.group.tolist()))

    def ap(self, scores: Array, rows: Any = slice(None)) -> float:
        return round(
            float(apgr(curve(list(scores[rows]), list(self.weak[rows]), list(self.strong[rows])))),
            4,
        )

    def quarters(self, scores: Array) -> list[float]:
        n = len(scores)
        bounds = [round(q * n / 4) for q in range(5)]
        return [self.ap(scores, slice(a, b)) for a, b in itertools.pairwise(bounds)]

    def shifted(self, base: Array, shifts: dict[str, float]) -> Array:
        out: Array = base + np.array([shifts.get(g, 0.0) for g in self.group])
        return out

    def online(self, base: Array, prior: float) -> Array:
        out = np.empty(len(base))
        total = dict.fromkeys(self.groups, 0.0)
        count = dict.fromkeys(self.groups, 0)
        for i, g in enumerate(self.group.tolist()):
            out[i] = base[i] + total[g] / (prior + count[g])
            total[g] += float(self.label[i] - base[i])
            count[g] += 1
        return out


def describe(rows: Rows, scores: Array) -> dict[str, Any]:
    return {
        "apgr": rows.ap(scores),
        "quarters": rows.quarters(scores),
        "per_source": {g: rows.ap(scores, rows.group == g) for g in rows.groups},
    }


def ceiling(rows: Rows, base: Array) -> dict[str, Any]:
    out: dict[str, Any] = {"static": describe(rows, base)}
    mean_shift = {
        g: float(rows.label[rows.group == g].mean() - base[rows.group == g].mean())
        for g in rows.groups
    }
    out["oracle mean"] = describe(rows, rows.shifted(base, mean_shift))
    first, *others = rows.groups
    best: tuple[float, dict[str, float]] = (-1.0, {})
    for values in itertools.product(GRID, repeat=len(others)):
        shifts = {g: float(v) for g, v in zip(others, values, strict=True)}
        value = rows.ap(rows.shifted(base, shifts))
        if value > best[0]:
            best = (value, shifts)
    out["oracle best"] = describe(rows, rows.shifted(base, best[1])) | {
        "shifts against " + first: best[1]
    }
    for prior in PRIORS:
        out[f"online prior {prior}"] = describe(rows, rows.online(base, prior))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routerbench", type=Path, default=Path("/tmp/preq/routerbench.jsonl"))
    parser.add_argument("--v2-routellm", type=Path, default=Path("/tmp/preq/v2-routellm.json"))
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/adaptive-levels-ceiling.json")
    )
    args = parser.parse_args()
    rows = Rows(args.routerbench)
    bases = {"v2 (shipped)": policy_scores(rows.items, "v2")}
    if args.v2_routellm.is_file():
        bases["v2 trained on RouteLLM only"] = policy_scores(
            rows.items, "v2", str(args.v2_routellm)
        )
    tables = {name: ceiling(rows, base) for name, base in bases.items()}
    result = {
        "benchmark": "RouterBench stream: the base's order kept within each source, only the "
        "sources' levels moved (oracle and prequential)",
        "rows": len(rows.items),
        "bases": tables,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, table in tables.items():
        print(name, {k: v["apgr"] for k, v in table.items()})


if __name__ == "__main__":
    main()

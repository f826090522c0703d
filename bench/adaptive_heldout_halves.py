"""The RouterBench prequential line, with the static v2 scored out of sample.

The routing issue asks the adaptive layer's prequential APGR on the RouterBench stream to beat
the static v2. The shipped v2 is trained on every RouterBench row, so its static 0.606 on that
stream is in-sample: a fitted model scored on its own training rows, against a learner that sees
each row's label only after scoring it. This script makes the comparison a deployment makes
(a scorer trained on public benchmarks, routing traffic it never trained on, from the same kinds
of tasks), without tuning anything on the streams:

* RouterBench's rows, shuffled with ``random.Random(0)`` (as ``export-labels --shuffle-seed 0``),
  are cut into two halves;
* for each half: a v2 is trained exactly as the shipped one (``fit_v2``, ``V2Config()``) on the
  shipped training set minus that half's rows (the RouteLLM pairs and the *other* half), and the
  half is streamed through the adaptive layer over it with the shipped defaults (``scorer:
  {kind: adaptive, base: v2}``), as ``tiergate eval-router --online`` streams a file;
* reported per half: the static APGR of that v2, the adaptive APGR, each quarter, each source,
  and a paired bootstrap of adaptive − static; and, as the literal reading, the shipped v2 and
  the shipped layer over it on the same half (in-sample again).

Run (about two minutes; byte-identical on a rerun):
    python bench/adaptive_heldout_halves.py --out bench/results/adaptive-heldout-halves.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.policy.load import parse_policy
from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.prequential import prequential, run_stream, settings_of
from gateway.tools.scorer.quality import apgr, curve
from gateway.tools.scorer.train import dumps
from gateway.tools.scorer.train_v2 import V2Config, design, fit_v2

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, max_score: 0.5, backends: [weak]}
  - {name: strong, backends: [strong]}
scorer: {kind: adaptive, base: v2%s}
"""
RESAMPLES = 1000


def halves(seed: int = 0) -> list[list[Labelled]]:
    rows = sources.routerbench()
    random.Random(seed).shuffle(rows)
    middle = len(rows) // 2
    return [rows[:middle], rows[middle:]]


def stream_report(items: list[Labelled], artifact: Path | None) -> dict[str, Any]:
    extra = "" if artifact is None else f", artifact: {artifact}"
    policy = parse_policy((POLICY % extra).encode(), source="p.yaml", base_dir=Path("/"))
    report = prequential(items, policy)
    base = [policy.score(i.messages, i.max_tokens).value for i in items]
    stream = run_stream(items, base, settings_of(policy))
    report["paired_bootstrap"] = paired_bootstrap(items, stream.given, base)
    return report


def paired_bootstrap(
    items: list[Labelled], scores: tuple[float, ...], base: list[float]
) -> dict[str, float]:
    """adaptive − static over resampled rows (the adaptive scores as they were given)."""
    given = np.asarray(scores)
    static = np.asarray(base)
    weak = np.asarray([i.weak for i in items])
    strong = np.asarray([i.strong for i in items])
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(RESAMPLES):
        at = rng.integers(0, len(items), len(items))
        try:
            a = apgr(curve(given[at].tolist(), weak[at].tolist(), strong[at].tolist()))
            b = apgr(curve(static[at].tolist(), weak[at].tolist(), strong[at].tolist()))
        except ValueError:
            continue
        diffs.append(a - b)
    low, median, high = np.percentile(diffs, [2.5, 50, 97.5])
    return {
        "median": round(float(median), 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    training = sources.shipped_training_set()
    results: dict[str, Any] = {"halves": []}
    with tempfile.TemporaryDirectory() as scratch:
        for number, half in enumerate(halves()):
            held = {i.id for i in half}
            items = [i for i in training if i.id not in held]
            artifact = fit_v2(items, design(items), V2Config(), sources=["heldout-half"])
            path = Path(scratch) / f"v2-half{number}.json"
            path.write_bytes(dumps(artifact))
            results["halves"].append(
                {
                    "half": number,
                    "rows": len(half),
                    "trained_on": len(items),
                    "v2_without_this_half": stream_report(half, path),
                    "shipped_v2_in_sample": stream_report(half, None),
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    for half in results["halves"]:
        for name in ("v2_without_this_half", "shipped_v2_in_sample"):
            r = half[name]
            quarters = " / ".join(str(q["apgr"]) for q in r["quarters"])
            print(
                f"half {half['half']} {name}: static {r['base_apgr']} adaptive {r['apgr']} "
                f"(quarters {quarters}) adaptive-static {r['paired_bootstrap']}"
            )


if __name__ == "__main__":
    main()

"""Can the adaptive layer beat a static base scorer that was trained on the very stream it
routes? Settings chosen on a development stream, then one evaluation on RouterBench and
AlpacaEval.

The prequential protocol of ``tiergate eval-router --online`` (each row scored from the labels
of the rows before it, then its label revealed; APGR over the stream and per quarter), re-done
in numpy so that many variants of the layer can be compared quickly: ``shipped`` reproduces
``gateway.scoring.adaptive.blend`` exactly (the same APGRs as ``eval-router --online``).

Development streams (never RouterBench or AlpacaEval): the RouteLLM pairs v2 trains on
(``export-labels routellm_trainable --shuffle-seed 0``), streamed whole and as five chunks of
~3,050 rows (each from an empty index: the evaluation streams have 3,164 and 805 rows), under
six conditions = two neighbour structures x three base scorers:

* structure ``plain``: the prompts as they are (zero-shot MMLU, GSM8K, MT-Bench);
  ``fewshot``: each prompt behind a fixed block of five prompts of its own benchmark (the first
  rows of the dev file, a stock answer after each), so every prompt's nearest labelled
  neighbours are near-duplicates that share the block, as RouterBench's few-shot ARC-C and
  Winogrande prompts do (median top-1 cosine 0.97 here, 0.99 there, 0.60 plain);
* base ``v2``: the shipped v2 (trained on these rows among others: in-sample, but it fits
  them loosely, static APGR 0.578); ``ridge1000``/``ridge100``: a ridge regression of the
  label on [embedding, v2 score] fitted on the whole dev stream (in-sample and tight: 0.639 and
  0.664), standing in for a base that already fits the stream well, as the shipped v2 fits
  RouterBench (0.606 against 0.504 for a v2 that never saw it).

Variants (``label`` pulls toward the neighbours' labels, as shipped; the others keep the base and
add the neighbours' mean *residual* ``label - base``, shrunk by count):

* ``shipped k p``: ``(p*base + sum w*label) / (p + sum w)``;
* ``resid k p``: ``base + sum w*(label - base_j) / (p + sum w)``;
* ``gain k p n0``: ``base + g*x`` with ``x`` the shrunk residual above and ``g`` the
  least-squares slope of ``label - base`` on ``x`` over the labels so far (each label's ``x``
  as it was when that row was scored), times ``n/(n + n0)``: the layer learns from the stream
  how far to trust its own neighbourhoods. Needs each label's base score (and its ``x``)
  stored.

Selection rule, fixed before the evaluation: the highest mean over the six conditions of the
chunk-mean APGR gain over the static base; ties by the worst gain. Then ONE evaluation on
RouterBench and AlpacaEval (base: shipped v2; v1 and a v2 trained on the RouteLLM pairs only
for reference).

Run (about 2 minutes on 2 cores):
    tiergate export-labels routellm_trainable --shuffle-seed 0 --out /tmp/routellm_trainable.jsonl
    tiergate export-labels routerbench --shuffle-seed 0 --out /tmp/routerbench.jsonl
    tiergate export-labels alpaca_mixtral --shuffle-seed 0 --out /tmp/alpaca_mixtral.jsonl
    tiergate train-scorer --kind v2 /tmp/routellm_trainable.jsonl --out /tmp/v2-routellm.json
    python bench/adaptive_prequential_dev.py --out bench/results/adaptive-prequential-dev.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.base import Message
from gateway.policy import parse_policy
from gateway.scoring.adaptive import text_of
from gateway.scoring.embedding import embed_many
from gateway.tools.scorer.labels import Labelled, read_labels
from gateway.tools.scorer.prequential import _Reveal
from gateway.tools.scorer.quality import apgr, curve

Array = NDArray[np.float64]
K_MAX = 1024
FLOOR = 0.3
CHUNKS = 5
POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, max_score: 0.5, backends: [weak]}
  - {name: strong, backends: [strong]}
scorer: {kind: adaptive, base: %s%s}
"""


class Stream:
    """One prequential stream: labels, outcomes, and each row's nearest earlier rows."""

    def __init__(self, items: list[Labelled], vectors: NDArray[np.float32]) -> None:
        reveal = _Reveal()
        self.label = np.array([reveal(i) for i in items])
        self.weak = np.array([i.weak for i in items])
        self.strong = np.array([i.strong for i in items])
        self.group = [i.group for i in items]
        self.idx, self.sim = neighbours(vectors)


def neighbours(vectors: NDArray[np.float32], chunk: int = 512) -> tuple[NDArray[Any], Array]:
    """For each row, its K_MAX most similar earlier rows (most similar first); -1 / -inf pad."""
    n = len(vectors)
    idx = np.full((n, K_MAX), -1, dtype=np.int64)
    sim = np.full((n, K_MAX), -np.inf, dtype=np.float64)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        block = vectors[start:end] @ vectors[:end].T
        for r in range(end - start):
            i = start + r
            row = block[r, :i]
            if i <= K_MAX:
                order = np.argsort(-row, kind="stable")
            else:
                top = np.argpartition(-row, K_MAX - 1)[:K_MAX]
                order = top[np.argsort(-row[top], kind="stable")]
            idx[i, : order.size] = order
            sim[i, : order.size] = row[order]
    return idx, sim


def ap(scores: Array, s: Stream, rows: Any = slice(None)) -> float | None:
    try:
        return round(apgr(curve(list(scores[rows]), list(s.weak[rows]), list(s.strong[rows]))), 4)
    except ValueError:
        return None


def quarters(scores: Array, s: Stream) -> list[float | None]:
    n = len(scores)
    bounds = [round(q * n / 4) for q in range(5)]
    return [ap(scores, s, slice(a, b)) for a, b in itertools.pairwise(bounds)]


def paired_bootstrap(scores: Array, base: Array, s: Stream, resamples: int = 500) -> list[float]:
    """2.5/50/97.5 percentiles of APGR(scores) - APGR(base) over rows resampled (seed 0)."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(resamples):
        rows = rng.integers(0, len(scores), len(scores))
        diffs.append((ap(scores, s, rows) or 0.0) - (ap(base, s, rows) or 0.0))
    return [round(float(v), 4) for v in np.percentile(diffs, [2.5, 50, 97.5])]


def _weights(s: Stream, k: int) -> tuple[Array, NDArray[Any]]:
    sim = s.sim[:, :k]
    w = np.where(sim > FLOOR, (sim - FLOOR) / (1.0 - FLOOR), 0.0)
    return w, np.maximum(s.idx[:, :k], 0)


def shipped(s: Stream, base: Array, k: int = 32, prior: float = 4.0) -> Array:
    w, j = _weights(s, k)
    out: Array = np.clip((prior * base + (w * s.label[j]).sum(1)) / (prior + w.sum(1)), 0.0, 1.0)
    return out


def residual(s: Stream, base: Array, k: int, prior: float) -> Array:
    w, j = _weights(s, k)
    x: Array = (w * (s.label[j] - base[j])).sum(1) / (prior + w.sum(1))
    return x


def resid(s: Stream, base: Array, k: int, prior: float) -> Array:
    return base + residual(s, base, k, prior)


def gain(s: Stream, base: Array, k: int, prior: float, n0: float) -> Array:
    x = residual(s, base, k, prior)
    r = s.label - base

    def before(v: Array) -> Array:
        return np.concatenate([[0.0], np.cumsum(v)[:-1]])

    n, sxr, sxx = before(np.ones_like(x)), before(x * r), before(x * x)
    safe = np.where(sxx > 1e-12, sxx, 1.0)
    g = np.where(sxx > 1e-12, sxr / safe, 0.0) * n / (n + n0)
    out: Array = base + g * x
    return out


Variant = Callable[[Stream, Array], Array]


def candidates() -> dict[str, Variant]:
    out: dict[str, Variant] = {}
    for k, p in itertools.product((32, 256), (4, 32)):
        out[f"shipped k{k} p{p}"] = partial(shipped, k=k, prior=p)
    for k, p in itertools.product((256, 1024), (32, 128, 512)):
        out[f"resid k{k} p{p}"] = partial(resid, k=k, prior=p)
    gains = [*itertools.product((1024,), (8, 32, 512), (300, 1000, 3000)), (256, 32, 3000)]
    for k, p, n0 in [*gains, (256, 128, 3000)]:
        out[f"gain k{k} p{p} n0 {n0}"] = partial(gain, k=k, prior=p, n0=n0)
    return out


def policy_scores(items: list[Labelled], base: str, artifact: str = "") -> Array:
    extra = f", artifact: {artifact}" if artifact else ""
    policy = parse_policy((POLICY % (base, extra)).encode(), source="p.yaml", base_dir=Path("/"))
    return np.array([policy.score(i.messages, i.max_tokens).value for i in items])


def fewshot_prompts(items: Sequence[Labelled]) -> list[str]:
    """Each prompt behind a five-shot block of its own benchmark (its first five prompts, each
    with a stock answer), unsampled."""
    shots: dict[str, list[str]] = {}
    for item in items:
        block = shots.setdefault(item.group, [])
        if len(block) < 5:
            answer = " A\n\n" if item.group == "mmlu" else "\nThe answer is 42.\n\n"
            block.append(item.messages[-1].content + answer)
    return ["".join(shots[i.group]) + i.messages[-1].content for i in items]


def fewshot_texts(items: list[Labelled]) -> list[str]:
    """``fewshot_prompts`` as the adaptive layer embeds them."""
    return [
        text_of((*item.messages[:-1], Message(role="user", content=prompt)))
        for item, prompt in zip(items, fewshot_prompts(items), strict=True)
    ]


def dev_bases(dev: list[Labelled], v2: Array, plain: NDArray[np.float32]) -> dict[str, Array]:
    """The development bases: the shipped v2, and two ridge fits of the stream's own labels on
    its embedding and v2 (standing in for a base that fits its stream tightly)."""
    design = np.hstack([plain, v2[:, None], np.ones((len(dev), 1))]).astype(np.float64)
    reveal = _Reveal()
    y = np.array([reveal(i) for i in dev])
    bases = {"v2": v2}
    for alpha in (1000, 100):
        theta = np.linalg.solve(design.T @ design + alpha * np.eye(design.shape[1]), design.T @ y)
        bases[f"ridge{alpha}"] = design @ theta
    return bases


def dev_spans(n: int) -> list[tuple[int, int]]:
    """The whole stream, then its ``CHUNKS`` chunks."""
    bounds = [round(c * n / CHUNKS) for c in range(CHUNKS + 1)]
    return [(0, n), *itertools.pairwise(bounds)]


Streams = dict[tuple[str, tuple[int, int]], Stream]


def dev_row(
    variant: Variant,
    streams: Streams,
    bases: dict[str, Array],
    spans: list[tuple[int, int]],
    static: dict[str, float | None],
) -> dict[str, Any]:
    """One variant's APGR gains over the static base in every development condition (each
    prompt structure x base, streamed whole and in chunks), and their summaries; ``static``
    collects the bases' own APGRs."""
    row: dict[str, Any] = {}
    for structure, base_name in itertools.product(("plain", "fewshot"), bases):
        deltas = []
        for lo, hi in spans:
            s, b = streams[(structure, (lo, hi))], bases[base_name][lo:hi]
            before = static.setdefault(f"{structure}/{base_name}/{lo}-{hi}", ap(b, s))
            deltas.append(round((ap(variant(s, b), s) or 0.0) - (before or 0.0), 4))
        row[f"{structure}/{base_name}"] = {
            "full": deltas[0],
            "chunk_mean": round(float(np.mean(deltas[1:])), 4),
            "chunks": deltas[1:],
        }
    conditions = list(row.values())
    row["mean_chunk_gain"] = round(float(np.mean([c["chunk_mean"] for c in conditions])), 4)
    row["mean_full_gain"] = round(float(np.mean([c["full"] for c in conditions])), 4)
    row["worst"] = round(min(min(c["full"], c["chunk_mean"]) for c in conditions), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dev", type=Path, default=Path("/tmp/routellm_trainable.jsonl"))
    parser.add_argument("--routerbench", type=Path, default=Path("/tmp/routerbench.jsonl"))
    parser.add_argument("--alpaca", type=Path, default=Path("/tmp/alpaca_mixtral.jsonl"))
    parser.add_argument("--v2-routellm", type=Path, default=Path("/tmp/v2-routellm.json"))
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/adaptive-prequential-dev.json")
    )
    args = parser.parse_args()

    # Development: six conditions, each streamed whole and as CHUNKS chunks.
    dev = list(read_labels([args.dev]).items)
    v2 = policy_scores(dev, "v2")
    plain = embed_many([text_of(i.messages) for i in dev]).astype(np.float32)
    fewshot = embed_many(fewshot_texts(dev)).astype(np.float32)
    bases = dev_bases(dev, v2, plain)
    spans = dev_spans(len(dev))
    streams = {
        (structure, span): Stream(dev[span[0] : span[1]], vectors[span[0] : span[1]])
        for structure, vectors in (("plain", plain), ("fewshot", fewshot))
        for span in spans
    }
    variants = candidates()
    table: dict[str, Any] = {}
    static: dict[str, float | None] = {}
    for name, variant in variants.items():
        row = dev_row(variant, streams, bases, spans, static)
        table[name] = row
        print(
            f"{name:24s} mean chunk {row['mean_chunk_gain']:+.4f} mean full "
            f"{row['mean_full_gain']:+.4f} worst {row['worst']:+.4f}",
            flush=True,
        )
    chosen = max(table, key=lambda v: (table[v]["mean_chunk_gain"], table[v]["worst"]))
    print("chosen on dev:", chosen, flush=True)

    # The one evaluation.
    evaluation: dict[str, Any] = {}
    for label_file in (args.routerbench, args.alpaca):
        items = list(read_labels([label_file]).items)
        vectors = embed_many([text_of(i.messages) for i in items]).astype(np.float32)
        s = Stream(items, vectors)
        base_scores = {"v2": policy_scores(items, "v2"), "v1": policy_scores(items, "v1")}
        if args.v2_routellm.is_file():
            base_scores["v2 trained on RouteLLM only"] = policy_scores(
                items, "v2", str(args.v2_routellm)
            )
        result: dict[str, Any] = {}
        for base_name, b in base_scores.items():
            given = {"static": b, "shipped k32 p4": shipped(s, b), chosen: variants[chosen](s, b)}
            result[base_name] = {
                what: {
                    "apgr": ap(scores, s),
                    "quarters": quarters(scores, s),
                    "groups": {
                        g: ap(scores, s, np.array([x == g for x in s.group]))
                        for g in sorted(set(s.group))
                    },
                }
                for what, scores in given.items()
            }
            result[base_name]["paired_bootstrap_95"] = {
                what: paired_bootstrap(given[what], b, s) for what in given if what != "static"
            }
            print(
                label_file.name,
                base_name,
                {w: r["apgr"] for w, r in result[base_name].items() if "apgr" in r},
                flush=True,
            )
        evaluation[label_file.name] = {"rows": len(items), **result}

    report = {
        "protocol": "settings chosen on the RouteLLM dev stream only (six conditions); one "
        "evaluation on RouterBench and AlpacaEval",
        "dev_rows": len(dev),
        "dev_static_apgr": static,
        "dev_gain_over_static": table,
        "chosen": chosen,
        "evaluation": evaluation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()

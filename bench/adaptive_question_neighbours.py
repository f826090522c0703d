"""Neighbours found on the *question* rather than the whole prompt: does that let the adaptive
layer beat the static v2 on RouterBench? Settings chosen on development streams only, then one
evaluation on RouterBench and AlpacaEval.

The shipped layer embeds the whole prompt (sampled: its first 1,500 and last 500 characters)
to find a request's labelled neighbours. RouterBench's ARC-C and Winogrande prompts are
five-shot blocks that share a long prefix of examples, so every ARC-C prompt is a near-duplicate
neighbour of every other, and the neighbours' noisy 0/1 labels blur the base's order within the
source (``bench/adaptive_prequential_dev.py``, stop 25). Here the base scorer still scores the
whole prompt; only the text embedded *for the neighbour search* changes:

* ``whole``: as shipped (``gateway.scoring.adaptive.text_of``);
* ``para``: the last paragraph of the last user message (the text after its last blank line:
  after the last few-shot separator of a few-shot block; the whole prompt when it has none),
  sampled as ``whole`` is;
* ``tail300``: the last 300 characters of the last user message;
* ``whole+para``: the sum of the ``whole`` and ``para`` embeddings, made unit length again.

Each crossed with the variants of the layer of ``adaptive_prequential_dev.py`` (``shipped`` =
the shipped blend toward the labels, ``resid`` = base + the neighbours' shrunk mean residual,
``gain`` = base + an online-learned slope times that residual; see that script).

Development conditions, as in ``adaptive_prequential_dev.py`` (never RouterBench or
AlpacaEval): the RouteLLM pairs v2 trains on (``export-labels routellm_trainable
--shuffle-seed 0``), streamed whole and as five chunks, ``plain`` and ``fewshot`` (each prompt
behind a five-shot block of its own benchmark, built as ``fewshot_texts`` builds it) under three
bases (the shipped v2, and two ridge fits of the dev stream standing in for a base that fits its
stream tightly). Selection rule, fixed before the evaluation (the same as that script's): the
highest mean over the six conditions of the chunk-mean APGR gain over the static base; ties by
the worst gain. Then ONE evaluation of the chosen (text, variant) on RouterBench and AlpacaEval
under the shipped v2 and a v2 trained on the RouteLLM pairs only (the deployment-like reading:
a base that never saw the traffic), with the shipped layer and stop 25's dev-chosen gain layer
(both on ``whole``) as references, per quarter and per source, and a paired bootstrap of each
against the static base.

Caveat on the dev conditions: on ``fewshot`` the ``para`` text recovers the dev prompt itself
whenever the prompt has no blank line of its own, so for ``para`` the ``fewshot`` conditions
are close to the ``plain`` ones by construction; what dev cannot say is whether the *questions*
of RouterBench's few-shot sources are informative neighbours of each other.

``--post-hoc FILE`` (run after the evaluation; it chooses nothing) writes diagnostics on the
evaluation streams: every candidate's APGR there (the best is an optimistic bound, picked on the
test), each text's median top-1 cosine per source, and per source the APGR of the neighbours'
weighted mean label alone (k 32, no base).

Run (about 6 minutes on 2 cores, the post-hoc diagnostics 30 s; deterministic):
    tiergate export-labels routellm_trainable --shuffle-seed 0 \\
        --out /tmp/preq2/routellm_trainable.jsonl
    tiergate export-labels routerbench --shuffle-seed 0 --out /tmp/preq2/routerbench.jsonl
    tiergate export-labels alpaca_mixtral --shuffle-seed 0 --out /tmp/preq2/alpaca_mixtral.jsonl
    tiergate export-labels routellm_trainable --out /tmp/preq2/routellm.jsonl
    tiergate train-scorer --kind v2 /tmp/preq2/routellm.jsonl --out /tmp/preq2/v2-routellm.json
    python bench/adaptive_question_neighbours.py --dev /tmp/preq2/routellm_trainable.jsonl \\
        --routerbench /tmp/preq2/routerbench.jsonl --alpaca /tmp/preq2/alpaca_mixtral.jsonl \\
        --v2-routellm /tmp/preq2/v2-routellm.json \\
        --out bench/results/adaptive-question-neighbours.json
    python bench/adaptive_question_neighbours.py \\
        --post-hoc bench/results/adaptive-question-neighbours-posthoc.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.scoring.adaptive import text_of
from gateway.scoring.embedding import embed_many
from gateway.scoring.features import last_user_text, sample
from gateway.tools.scorer.labels import Labelled, read_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive_prequential_dev import (
    Stream,
    Variant,
    ap,
    dev_bases,
    dev_row,
    dev_spans,
    fewshot_prompts,
    fewshot_texts,
    gain,
    paired_bootstrap,
    policy_scores,
    quarters,
    resid,
    shipped,
)

Array = NDArray[np.float64]
Vectors = NDArray[np.float32]
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
TEXTS = ("whole", "para", "tail300", "whole+para")
SHIPPED = "whole / shipped k32 p4"
STOP25 = "whole / gain k1024 p32 n0 1000"


def last_paragraph(text: str) -> str:
    """The text after the last blank line (the whole text when it has none)."""
    parts = [p for p in _BLANK_LINE.split(text.strip()) if p.strip()]
    return parts[-1].strip() if parts else ""


def unit(v: Vectors) -> Vectors:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out: Vectors = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return out


def vectors_of(prompts: Sequence[str], text: str) -> Vectors:
    """The neighbour-search embeddings of raw last-user texts under one text choice."""
    if text == "whole":
        return embed_many([sample(p) for p in prompts]).astype(np.float32)
    if text == "para":
        return embed_many([sample(last_paragraph(p)) for p in prompts]).astype(np.float32)
    if text == "tail300":
        return embed_many([p[-300:] for p in prompts]).astype(np.float32)
    if text == "whole+para":
        return unit(vectors_of(prompts, "whole") + vectors_of(prompts, "para"))
    raise ValueError(text)


def variants() -> dict[str, Variant]:
    out: dict[str, Variant] = {}
    for k, p in ((32, 4), (32, 32), (256, 4), (256, 32)):
        out[f"shipped k{k} p{p}"] = partial(shipped, k=k, prior=p)
    for k, p in ((256, 128), (1024, 128), (1024, 512)):
        out[f"resid k{k} p{p}"] = partial(resid, k=k, prior=p)
    for k, p, n0 in ((1024, 8, 1000), (1024, 32, 1000), (1024, 32, 3000), (1024, 512, 1000)):
        out[f"gain k{k} p{p} n0 {n0}"] = partial(gain, k=k, prior=p, n0=n0)
    out["gain k256 p32 n0 3000"] = partial(gain, k=256, prior=32, n0=3000)
    return out


def top1(s: Stream) -> float:
    """Median cosine of each row's most similar earlier row (rows with one)."""
    first = s.sim[1:, 0]
    return round(float(np.median(first[np.isfinite(first)])), 3)


def development(dev: list[Labelled], log: Callable[[str], None]) -> dict[str, Any]:
    v2 = policy_scores(dev, "v2")
    plain_raw = [last_user_text(i.messages) for i in dev]
    fewshot_raw = fewshot_prompts(dev)
    # The dev structure is exactly stop 25's: the sampled prompts are fewshot_texts'.
    if [sample(p) for p in fewshot_raw] != fewshot_texts(dev):
        raise RuntimeError("fewshot_prompts no longer matches fewshot_texts")
    plain_whole = vectors_of(plain_raw, "whole")
    bases = dev_bases(dev, v2, plain_whole)
    spans = dev_spans(len(dev))
    static: dict[str, float | None] = {}
    table: dict[str, Any] = {}
    similarity: dict[str, Any] = {}
    for text in TEXTS:
        started = time.monotonic()
        streams = {}
        for structure, raw in (("plain", plain_raw), ("fewshot", fewshot_raw)):
            vectors = vectors_of(raw, text)
            for lo, hi in spans:
                streams[(structure, (lo, hi))] = Stream(dev[lo:hi], vectors[lo:hi])
            similarity[f"{text}/{structure}"] = top1(streams[(structure, spans[0])])
        for name, variant in variants().items():
            row = dev_row(variant, streams, bases, spans, static)
            table[f"{text} / {name}"] = row
            log(
                f"{text:10s} {name:24s} mean chunk {row['mean_chunk_gain']:+.4f} mean full "
                f"{row['mean_full_gain']:+.4f} worst {row['worst']:+.4f}"
            )
        del streams
        log(f"  ({text}: {time.monotonic() - started:.0f} s; median top-1 cosine {similarity})")
    chosen = max(table, key=lambda v: (table[v]["mean_chunk_gain"], table[v]["worst"]))
    return {
        "dev_rows": len(dev),
        "dev_static_apgr": static,
        "dev_median_top1_cosine": similarity,
        "dev_gain_over_static": table,
        "chosen": chosen,
    }


def scores_of(setting: str, items: Sequence[Labelled], base: Array) -> Array:
    text, name = setting.split(" / ")
    s = Stream(list(items), vectors_of([last_user_text(i.messages) for i in items], text))
    return variants()[name](s, base)


def evaluation(
    label_file: Path, v2_routellm: Path, chosen: str, log: Callable[[str], None]
) -> dict[str, Any]:
    items = list(read_labels([label_file]).items)
    # The evaluation streams' neighbour texts: text_of is what the shipped layer embeds.
    if [text_of(i.messages) for i in items] != [sample(last_user_text(i.messages)) for i in items]:
        raise RuntimeError("text_of is no longer the sampled last user message")
    reference = Stream(items, vectors_of([last_user_text(i.messages) for i in items], "whole"))
    bases = {"v2": policy_scores(items, "v2")}
    if v2_routellm.is_file():
        bases["v2 trained on RouteLLM only"] = policy_scores(items, "v2", str(v2_routellm))
    text = chosen.split(" / ")[0]
    settings = list(dict.fromkeys([SHIPPED, STOP25, f"{text} / shipped k32 p4", chosen]))
    groups = sorted(set(reference.group))
    result: dict[str, Any] = {"rows": len(items), "chosen": chosen}
    for base_name, b in bases.items():
        given = {"static": b, **{v: scores_of(v, items, b) for v in settings}}
        result[base_name] = {
            what: {
                "apgr": ap(scores, reference),
                "quarters": quarters(scores, reference),
                "groups": {
                    g: ap(scores, reference, np.array([x == g for x in reference.group]))
                    for g in groups
                },
            }
            for what, scores in given.items()
        }
        result[base_name]["paired_bootstrap_95_vs_static"] = {
            what: paired_bootstrap(given[what], b, reference) for what in given if what != "static"
        }
        log(
            f"{label_file.name} {base_name}: "
            + ", ".join(f"{w} {r['apgr']}" for w, r in result[base_name].items() if "apgr" in r)
        )
    return result


def post_hoc(label_file: Path, v2_routellm: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """AFTER the one evaluation, not a test: every candidate's APGR on an evaluation stream
    (the best of them is an optimistic bound, chosen on the test itself), each text's median
    top-1 cosine per source, and how well the neighbours' own weighted mean label (k 32, no
    base) orders each source: whether the neighbours carry any signal within a source."""
    items = list(read_labels([label_file]).items)
    raw = [last_user_text(i.messages) for i in items]
    bases = {"v2": policy_scores(items, "v2")}
    if v2_routellm.is_file():
        bases["v2 trained on RouteLLM only"] = policy_scores(items, "v2", str(v2_routellm))
    groups = sorted({i.group for i in items})
    out: dict[str, Any] = {"rows": len(items), "static": {}, "top1_cosine": {}}
    out["neighbour_mean_only_by_source"] = {}
    grid: dict[str, dict[str, float | None]] = {b: {} for b in bases}
    for text in TEXTS:
        s = Stream(items, vectors_of(raw, text))
        mask = {g: np.array([x == g for x in s.group]) for g in groups}
        out["top1_cosine"][text] = {
            g: round(float(np.median(s.sim[1:, 0][m[1:] & np.isfinite(s.sim[1:, 0])])), 3)
            for g, m in mask.items()
        }
        for base_name, b in bases.items():
            out["static"][base_name] = {g: ap(b, s, m) for g, m in mask.items()}
            for name, variant in variants().items():
                grid[base_name][f"{text} / {name}"] = ap(variant(s, b), s)
            # prior 1e-9: the neighbours' weighted mean label alone (the base where none count)
            alone = shipped(s, b, k=32, prior=1e-9)
            out["neighbour_mean_only_by_source"][f"{text} / {base_name}"] = {
                g: ap(alone, s, m) for g, m in mask.items()
            }
        log(f"{label_file.name} {text}: top-1 cosine {out['top1_cosine'][text]}")
    for base_name, row in grid.items():
        best = max(row, key=lambda v: row[v] or 0.0)
        log(f"{label_file.name} {base_name}: post-hoc best {best} {row[best]}")
        out[base_name] = {"best_post_hoc": [best, row[best]], "all": row}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dev", type=Path, default=Path("/tmp/preq2/routellm_trainable.jsonl"))
    parser.add_argument("--routerbench", type=Path, default=Path("/tmp/preq2/routerbench.jsonl"))
    parser.add_argument("--alpaca", type=Path, default=Path("/tmp/preq2/alpaca_mixtral.jsonl"))
    parser.add_argument("--v2-routellm", type=Path, default=Path("/tmp/preq2/v2-routellm.json"))
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/adaptive-question-neighbours.json")
    )
    parser.add_argument(
        "--dev-only", action="store_true", help="the development table and the choice only"
    )
    parser.add_argument(
        "--post-hoc",
        type=Path,
        help="instead: write the post-hoc diagnostics on the evaluation streams here "
        "(run after the evaluation; chooses nothing)",
    )
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, flush=True)

    if args.post_hoc is not None:
        diagnostics = {
            "note": "after the one evaluation; NOT a test: the best of these was chosen on the "
            "evaluation streams themselves",
            **{f.name: post_hoc(f, args.v2_routellm, log) for f in (args.routerbench, args.alpaca)},
        }
        args.post_hoc.parent.mkdir(parents=True, exist_ok=True)
        args.post_hoc.write_text(json.dumps(diagnostics, indent=2) + "\n")
        log(f"wrote {args.post_hoc}")
        return

    report: dict[str, Any] = {
        "protocol": "neighbour text and layer variant chosen on the RouteLLM dev stream only "
        "(six conditions, chunk-mean gain over the static base); one evaluation on RouterBench "
        "and AlpacaEval",
        **development(list(read_labels([args.dev]).items), log),
    }
    log(f"chosen on dev: {report['chosen']}")
    if not args.dev_only:
        report["evaluation"] = {
            f.name: evaluation(f, args.v2_routellm, report["chosen"], log)
            for f in (args.routerbench, args.alpaca)
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()

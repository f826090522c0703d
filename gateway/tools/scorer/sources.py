"""The public routing-outcome sources in the shared data folder, read as labelled prompts.

* RouteLLM pairs: GSM8K, MMLU, MT-Bench (Mixtral-8x7B vs GPT-4); rows marked contaminated are
  left out, as everywhere else. ``routellm/overlap_drop.tsv`` names near-duplicates of other
  public evaluation sets: never train on them (``training_exclusions``).
* RouterBench slices: ARC-Challenge, MBPP, Winogrande (Mixtral-8x7B vs GPT-4), both splits.
  Their prompts are stored as a Python list literal of one string; the string is the prompt.
* AlpacaEval judgments (CC BY-NC 4.0: evaluation only, never in a shipped model): per prompt the
  GPT-4-turbo CoT judge's probability that Mixtral-8x7B-Instruct (or Mistral-7B-Instruct-v0.2)
  beats the GPT-4-turbo reference. weak = p_model_wins, strong = 1 - p_model_wins. Both pairs
  share one source, ``alpaca_eval``: they are the same prompts, so they are held out together.

Where a source publishes more models than the pair, each prompt also carries the *crowd*: the
mean quality every published model reached on it (RouterBench's other models; MT-Bench's GPT-4
grades of every model in ``mt_bench_gpt4_single_all_models.jsonl``; AlpacaEval's every model
and judge). It says how hard a prompt is with less noise than one weak model's 0 or 1.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapters.base import Message
from gateway.tools.scorer.labels import (
    ROUTELLM_PAIRS,
    SHARED_DATA,
    Labelled,
    LabelsError,
    LabelSet,
    read_labels,
    shared_data,
)

OVERLAP_DROP = SHARED_DATA / "routellm" / "overlap_drop.tsv"
ROUTERBENCH = SHARED_DATA / "routerbench" / "routerbench_slices.jsonl.gz"
ALPACA_EVAL = SHARED_DATA / "alpaca_eval" / "alpaca_eval_judgments.jsonl.gz"
MT_BENCH_ALL = SHARED_DATA / "routellm" / "mt_bench_gpt4_single_all_models.jsonl"
ALPACA_ANNOTATOR = "alpaca_eval_cot_gpt4_turbo_fn"
ALPACA_PAIRS = {
    "Mixtral-8x7B-Instruct-v0.1": "alpaca_mixtral",
    "Mistral-7B-Instruct-v0.2": "alpaca_mistral",
}
ALPACA_SOURCE = "alpaca_eval"
_ROUTERBENCH_NAMES = {"winograde": "winogrande"}  # the slice files misspell it
# Sources whose outcomes may train a model that ships (AlpacaEval's licence forbids it).
SHIPPABLE = ("gsm8k", "mmlu", "mt_bench", "arc_challenge", "mbpp", "winogrande")


def routellm(near: Path | None = None) -> LabelSet:
    """The RouteLLM pairs (rows marked contaminated left out and counted); MT-Bench's with the
    mean grade of every model GPT-4 graded on the question as their crowd."""
    pairs = read_labels([shared_data(ROUTELLM_PAIRS, near=near)])
    grades = mt_bench_crowd(near)
    items = tuple(
        replace(i, crowd=grades.get(i.id)) if i.group == "mt_bench" else i for i in pairs.items
    )
    return LabelSet(items, pairs.contaminated)


def mt_bench_crowd(near: Path | None = None) -> dict[str, float]:
    """Per MT-Bench question (``mtbench-<n>``, the pairs' ids): the mean GPT-4 grade (1–10) of
    every model and turn in the single-answer grading file."""
    path = shared_data(MT_BENCH_ALL, near=near)
    grades: defaultdict[str, list[float]] = defaultdict(list)
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                raw = json.loads(line)
                if isinstance(raw.get("score"), int | float) and raw["score"] >= 0:
                    grades[f"mtbench-{raw['question_id']}"].append(float(raw["score"]))
    return {k: statistics.fmean(v) for k, v in grades.items()}


def training_exclusions(near: Path | None = None) -> frozenset[str]:
    """The ids of the RouteLLM rows that must never be trained on (``overlap_drop.tsv``)."""
    path = shared_data(OVERLAP_DROP, near=near)
    with path.open(encoding="utf-8", newline="") as stream:
        return frozenset(row["id"] for row in csv.DictReader(stream, delimiter="\t"))


def routerbench(near: Path | None = None) -> list[Labelled]:
    path = shared_data(ROUTERBENCH, near=near)
    items = []
    for number, raw in _json_lines(path):
        name = _ROUTERBENCH_NAMES.get(raw["source"], raw["source"])
        items.append(
            Labelled(
                id=str(raw["id"]),
                group=name,
                source=name,
                messages=(Message(role="user", content=_unwrap(raw["prompt"], path, number)),),
                weak=float(raw["weak"]),
                strong=float(raw["strong"]),
                crowd=statistics.fmean(map(float, raw["models"].values()))
                if raw.get("models")
                else None,
            )
        )
    return items


def alpaca_eval(near: Path | None = None) -> list[Labelled]:
    path = shared_data(ALPACA_EVAL, near=near)
    items: list[Labelled] = []
    crowd: defaultdict[str, list[float]] = defaultdict(list)
    for _number, raw in _json_lines(path):
        if raw["p_model_wins"] is not None:
            crowd[raw["prompt"]].append(float(raw["p_model_wins"]))
        group = ALPACA_PAIRS.get(raw["model"])
        if raw["annotator"] != ALPACA_ANNOTATOR or group is None:
            continue
        p = float(raw["p_model_wins"])
        items.append(
            Labelled(
                id=f"{group}-{len(items)}",
                group=group,
                source=ALPACA_SOURCE,
                messages=(Message(role="user", content=str(raw["prompt"])),),
                weak=p,
                strong=1.0 - p,
            )
        )
    return [replace(i, crowd=statistics.fmean(crowd[i.messages[-1].content])) for i in items]


def shipped_training_set(near: Path | None = None) -> list[Labelled]:
    """What the shipped v2 scorer is trained on: RouteLLM minus ``overlap_drop.tsv`` plus the
    RouterBench slices (never AlpacaEval)."""
    dropped = training_exclusions(near)
    return [i for i in routellm(near).items if i.id not in dropped] + routerbench(near)


def shipped_training_files(near: Path | None = None) -> list[Path]:
    """The files ``shipped_training_set`` reads (their digests go into the artifact)."""
    return [
        shared_data(p, near=near) for p in (ROUTELLM_PAIRS, OVERLAP_DROP, ROUTERBENCH, MT_BENCH_ALL)
    ]


def every_source(near: Path | None = None) -> LabelSet:
    """All eight evaluation pairs (seven sources), in a fixed order."""
    pairs = routellm(near)
    items = (*pairs.items, *routerbench(near), *alpaca_eval(near))
    return LabelSet(items, pairs.contaminated)


def write_jsonl(items: Iterable[Labelled], path: Path) -> int:
    """Write labelled prompts in the labels format (one user message each); returns the count."""
    count = 0
    with path.open("w", encoding="utf-8") as stream:
        for item in items:
            row = {
                "id": item.id,
                "benchmark": item.group,
                "source": item.origin,
                "messages": [{"role": m.role, "content": m.content} for m in item.messages],
                "weak": item.weak,
                "strong": item.strong,
            }
            if item.crowd is not None:
                row["crowd"] = item.crowd
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield number, json.loads(line)


def _unwrap(prompt: object, path: Path, number: int) -> str:
    """RouterBench's ``"['text']"`` as ``text``."""
    if not isinstance(prompt, str):
        raise LabelsError(f"{path}: line {number}: prompt is not a string")
    try:
        value = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        return prompt
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n\n".join(value)
    return prompt

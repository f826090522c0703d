"""Prequential ("test, then train") evaluation of the adaptive scorer on labelled prompts.

The rows are streamed in file order. Each row is scored with what the adaptive layer learned
from the rows *before* it (its neighbours among them, over the policy's base scorer); then its
label is revealed, as a judge would reveal it: how much better the strong model was,
``strong - weak`` normalised per source by the spread of the quality values seen so far in that
source (this row's included), so ``label = clip((strong - weak) / spread, 0, 1)``: 1 when only
the strong model did well, 0 when the weak one did as well or better (the scale of
P(strong model needed), like a feedback label ``1 - quality`` on a cheaper tier's answer).
The APGR of the scores as they were given is reported over the whole stream and per quarter
(the learning curve), next to the static base scorer's on the same rows. Deterministic: the
same file gives the same numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gateway.policy import Policy
from gateway.scoring.adaptive import AdaptiveSettings, BaseKind, LabelIndex, text_of
from gateway.scoring.embedding import embed_many
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.quality import apgr, curve

QUARTERS = 4
_REPORTED = ("k", "prior", "min_similarity", "max_labels")


@dataclass(frozen=True, slots=True)
class Stream:
    """The scores given to each row (before its label was known) and the base scorer's."""

    given: tuple[float, ...]
    base: tuple[float, ...]
    labels: tuple[float, ...]  # as revealed after each row was scored


class _Reveal:
    """Turns a row's outcomes into a label, normalised by its source's spread so far."""

    def __init__(self) -> None:
        self._spread: dict[str, tuple[float, float]] = {}

    def __call__(self, item: Labelled) -> float:
        low, high = self._spread.get(item.origin, (item.weak, item.weak))
        low, high = min(low, item.weak, item.strong), max(high, item.weak, item.strong)
        self._spread[item.origin] = (low, high)
        if high == low:
            return 0.0
        return min(1.0, max(0.0, item.gain / (high - low)))


def settings_of(policy: Policy) -> AdaptiveSettings:
    """The policy's adaptive settings, or the defaults over its scorer when it has none."""
    if policy.adaptive is not None:
        return policy.adaptive
    kind = policy.scorer_kind
    base: BaseKind = "learned" if kind == "learned" else "v2" if kind == "v2" else "v1"
    return AdaptiveSettings(base=base)


def run_stream(
    items: Sequence[Labelled], base: Sequence[float], settings: AdaptiveSettings
) -> Stream:
    """Score each row from the labels of the rows before it, then reveal its label."""
    vectors = embed_many([text_of(i.messages) for i in items])
    index = LabelIndex(settings.max_labels)
    reveal = _Reveal()
    given: list[float] = []
    labels: list[float] = []
    for position, item in enumerate(items):
        given.append(index.estimate(vectors[position], base[position], settings).value)
        label = reveal(item)
        labels.append(label)
        index.add([position], vectors[position : position + 1], [label])
    return Stream(tuple(given), tuple(base), tuple(labels))


def _apgr(items: Sequence[Labelled], scores: Sequence[float]) -> float | None:
    try:
        return round(apgr(curve(scores, [i.weak for i in items], [i.strong for i in items])), 4)
    except ValueError:  # no quality gap in this slice: APGR is undefined
        return None


def prequential(items: Sequence[Labelled], policy: Policy) -> dict[str, Any]:
    """The report: APGR overall and per quarter, adaptive and static base, per group too."""
    settings = settings_of(policy)
    base = [policy.score(i.messages, i.max_tokens).value for i in items]
    stream = run_stream(items, base, settings)
    n = len(items)
    bounds = [round(q * n / QUARTERS) for q in range(QUARTERS + 1)]
    quarters = []
    for start, end in itertools.pairwise(bounds):
        part = items[start:end]
        quarters.append(
            {
                "rows": [start, end],
                "apgr": _apgr(part, stream.given[start:end]),
                "base_apgr": _apgr(part, stream.base[start:end]),
            }
        )
    groups = {}
    for group in sorted({i.group for i in items}):
        at = [k for k, i in enumerate(items) if i.group == group]
        chosen = [items[k] for k in at]
        groups[group] = {
            "rows": len(at),
            "apgr": _apgr(chosen, [stream.given[k] for k in at]),
            "base_apgr": _apgr(chosen, [stream.base[k] for k in at]),
        }
    moved = np.abs(np.asarray(stream.given) - np.asarray(stream.base))
    return {
        "rows": n,
        "order": "file order",
        "base_scorer": settings.base,
        "settings": {k: v for k, v in asdict(settings).items() if k in _REPORTED},
        "apgr": _apgr(items, stream.given),
        "base_apgr": _apgr(items, stream.base),
        "quarters": quarters,
        "groups": groups,
        "mean_abs_shift": round(float(moved.mean()), 4) if n else 0.0,
    }


def to_markdown(report: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"Prequential evaluation: {report['rows']} rows in {report['order']}, adaptive layer "
        f"over the {report['base_scorer']} scorer ({report['settings']})",
        "",
        "| slice | rows | adaptive APGR | static base APGR |",
        "|---|---|---|---|",
        f"| all | {report['rows']} | {cell(report['apgr'])} | {cell(report['base_apgr'])} |",
    ]
    for number, quarter in enumerate(report["quarters"], 1):
        start, end = quarter["rows"]
        lines.append(
            f"| quarter {number} (rows {start}–{end - 1}) | {end - start} | "
            f"{cell(quarter['apgr'])} | {cell(quarter['base_apgr'])} |"
        )
    for group, figures in report["groups"].items():
        lines.append(
            f"| group {group} | {figures['rows']} | {cell(figures['apgr'])} | "
            f"{cell(figures['base_apgr'])} |"
        )
    return "\n".join(lines)

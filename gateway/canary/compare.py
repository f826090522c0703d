"""Comparing a candidate's answer with the stable backend's: cheap signals, and the judge's
grade when one was asked. The result is a quality score in [0, 1] (1: as good as stable)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REFUSALS = re.compile(
    r"\b(i can(?:no|')t (?:help|assist|do|provide)|i(?: am|'m) (?:sorry|unable)|"
    r"as an ai(?: language model)?|i (?:won't|will not) )",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Comparison:
    quality: float
    signals: tuple[str, ...]


def is_refusal(text: str) -> bool:
    return _REFUSALS.search(text[:400]) is not None


def compare(
    stable: str,
    stable_finish: str,
    candidate: str,
    candidate_finish: str,
    *,
    judge: float | None = None,
) -> Comparison:
    """Cheap signals first: an empty answer scores 0; a refusal where stable answered, a
    truncated answer where stable finished, and a length far from stable's each cut the score.
    A judge's grade, when there is one, caps it (the lower of the two wins)."""
    signals: list[str] = []
    if not candidate.strip():
        return Comparison(0.0, ("empty",) if stable.strip() else ("both_empty",))
    quality = 1.0
    if is_refusal(candidate) and not is_refusal(stable):
        quality *= 0.2
        signals.append("refusal")
    if candidate_finish == "length" and stable_finish != "length":
        quality *= 0.6
        signals.append("truncated")
    long, short = max(len(stable), len(candidate)), min(len(stable), len(candidate))
    ratio = short / long if long else 1.0
    if ratio < 0.5:
        quality *= 0.5 + ratio
        signals.append(f"length_ratio={ratio:.2f}")
    if judge is not None:
        quality = min(quality, judge)
        signals.append(f"judge={judge:.2f}")
    return Comparison(round(quality, 4), tuple(signals))

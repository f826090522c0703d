"""What the learned scorer sees in a request: hashed words and word pairs of the last user
message, a handful of dense cues (the v1 scorer's features plus counts of numbers and units that
multi-step word problems have), and the prompt's *shape* (multiple choice or open).

Pure and cheap: the text is sampled like the v1 scorer's (head and tail), hashing is
``zlib.crc32`` (stable across processes and platforms, unlike ``hash``), and nothing here
imports numpy.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.base import Message
from gateway.scoring.heuristic import FEATURES, features

SHAPES: tuple[str, ...] = ("mcq", "open")
NUMERIC: tuple[str, ...] = (
    "words",
    "numbers",
    "distinct_numbers",
    "max_digits",
    "decimals",
    "percent",
    "money",
    "fractions",
    "rates",
    "comparisons",
    "sentences",
    "words_per_sentence",
    "log_max_value",
    "time_units",
    "remainders",
    "conditionals",
    "question_marks",
)
DENSE: tuple[str, ...] = (*FEATURES, *NUMERIC)
HEAD_CHARS = 1500
TAIL_CHARS = 500

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
# "A. ...\nB. ..." or "(A) ...": the options of a multiple-choice question.
_OPTIONS = re.compile(r"(?:^|\n)\s*\(?A[.):]\s.*\n\s*\(?B[.):]\s", re.DOTALL)
_CUES: dict[str, tuple[str, ...]] = {
    "fractions": ("half", "third", "quarter", "twice", "double", "triple"),
    "rates": (" each", " per ", " every "),
    "comparisons": ("more than", "less than", "fewer", "older", "younger"),
    "time_units": ("hour", "minute", "day", "week", "month", "year"),
    "remainders": ("remain", "left", "rest"),
    "conditionals": (" if ", "then"),
}


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    shape: str
    buckets: tuple[int, ...]  # sorted, distinct hashed word and word-pair buckets
    dense: tuple[float, ...]  # in DENSE order, before standardisation
    prompt_tokens: int


def last_user_text(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def sample(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def shape_of(text: str) -> str:
    return "mcq" if _OPTIONS.search(text) else "open"


def hashed_buckets(text: str, buckets: int) -> tuple[int, ...]:
    """The buckets of the lower-cased words and adjacent word pairs of ``text``."""
    # A number's digits are noise to a linear model; its size is not: "1250" becomes "#4".
    words = [f"#{len(w)}" if w.isdigit() else w for w in _WORD.findall(text.lower())]
    grams = {"w:" + w for w in words}
    grams.update(f"b:{a} {b}" for a, b in itertools.pairwise(words))
    return tuple(sorted({zlib.crc32(g.encode()) % buckets for g in grams}))


def numeric_cues(text: str) -> dict[str, float]:
    lower = text.lower()
    words = _WORD.findall(lower)
    numbers = _NUMBER.findall(text)
    values = [float(n.replace(",", "")) for n in numbers if n.replace(",", "").count(".") <= 1]
    sentences = max(1, len(_SENTENCE_END.findall(text)))
    cues = {name: float(sum(lower.count(c) for c in words_)) for name, words_ in _CUES.items()}
    raw = {
        "words": float(len(words)),
        "numbers": float(len(numbers)),
        "distinct_numbers": float(len(set(numbers))),
        "max_digits": float(max((len(n) for n in numbers), default=0)),
        "decimals": float(sum("." in n for n in numbers)),
        "percent": float(text.count("%") + lower.count("percent")),
        "money": float(text.count("$")),
        "sentences": float(sentences),
        "words_per_sentence": len(words) / sentences,
        "log_max_value": math.log1p(max(values, default=0.0)),
        "question_marks": float(text.count("?")),
        **cues,
    }
    # Counts grow without bound; their logarithm keeps a linear model's terms comparable.
    return {name: math.log1p(raw[name]) for name in NUMERIC}


def extract(messages: Sequence[Message], max_tokens: int | None, buckets: int) -> RequestFeatures:
    """Everything the learned scorer needs from a request."""
    text = sample(last_user_text(messages))
    v1 = features(messages, max_tokens)
    tokens = int(v1.pop("_tokens"))
    cues = numeric_cues(text)
    return RequestFeatures(
        shape=shape_of(text),
        buckets=hashed_buckets(text, buckets),
        dense=tuple(v1[f] for f in FEATURES) + tuple(cues[f] for f in NUMERIC),
        prompt_tokens=tokens,
    )

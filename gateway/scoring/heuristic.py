"""The complexity scorer, version 1: pure, deterministic, fast (tens of microseconds).

A request's *features* are each scaled to [0, 1]; the score is ``bias + Σ weight·feature``
clipped to [0, 1]. Weights and bias come from the policy, so ops can tune them without a
release (and ``tiergate calibrate`` can fit them). The scorer also returns each feature's
contribution, largest first: the "why" that ``policy explain`` prints.

Cue words are looked up in the *last user message* (a system prompt that says "think step by
step" should not push every request up a tier); length counts the whole conversation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from adapters.base import Message
from gateway.scoring.tokens import count_exact

FEATURES: tuple[str, ...] = (
    "length",
    "code",
    "math",
    "reasoning",
    "multi_step",
    "questions",
    "constraints",
    "depth",
    "output",
)

DEFAULT_BIAS = 0.0
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "length": 0.25,
        "code": 0.35,
        "math": 0.35,
        "reasoning": 0.30,
        "multi_step": 0.20,
        "questions": 0.10,
        "constraints": 0.10,
        "depth": 0.10,
        "output": 0.20,
    }
)

# Cue vocabulary, one category per entry; "|" separates entries so phrases can hold spaces.
_CUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        name: tuple(w.strip() for w in words.split("|"))
        for name, words in {
            "code": "def|class|function|import|return|const|var|let|async|await|lambda|struct|"
            "impl|fn|select|insert|update|delete|join|regex|compile|compiler|debug|bug|"
            "stacktrace|traceback|exception|python|javascript|typescript|rust|java|golang|sql|"
            "bash|api|refactor|algorithm|implement|code|script|json|yaml|html|css|segfault|"
            "kubernetes|docker",
            "math": "solve|equation|integral|derivative|prove|proof|theorem|lemma|matrix|"
            "probability|calculate|compute|sum|product|factor|prime|polynomial|log|sqrt|limit|"
            "vector|eigenvalue|percent|percentage|ratio|how many|how much|average|total",
            "reasoning": "why|explain|analyze|analyse|compare|contrast|evaluate|justify|reason|"
            "reasoning|trade-off|tradeoff|implications|critique|argue|derive|infer|"
            "pros and cons|step by step|in depth|detailed|design|architecture|strategy|optimize|"
            "optimise|diagnose|cause",
            "multi_step": "first|then|next|finally|after that|afterwards|step|steps|and then|"
            "followed by|stage|phase|plan",
            "constraints": "must|exactly|at least|at most|no more than|without|only|format|"
            "strictly|ensure|required|constraint|words or less",
        }.items()
    }
)
_PHRASES = {name: tuple(w for w in words if " " in w or "-" in w) for name, words in _CUES.items()}
_WORD_CATEGORY: Mapping[str, str] = MappingProxyType(
    {w: name for name, words in _CUES.items() for w in words if " " not in w and "-" not in w}
)
_WORD_BREAKS = str.maketrans(dict.fromkeys(".,;:!?()[]{}\"'`<>/\\|=+*^%$#@~&", " "))
_DIGITS_TO_ZERO = str.maketrans("123456789×÷", "000000000*/")
# "3*7", "x = 2 + 2", "\\frac": arithmetic between digits, written with or without spaces.
# Arithmetic between digits ("3*7", "x = 2 + 2"), found on the text with every digit made 0.
_ARITHMETIC = re.compile(r"0 ?[-+*/^=] ?0")
_LATEX_MARKS = ("\\frac", "\\sum", "\\int", "\\sqrt")
_UNICODE_MARKS = ("∑", "∫", "√", "≤", "≥", "≠")
_IMPERATIVES = frozenset(
    "write|list|give|make|create|describe|explain|summarize|summarise|translate|find|show|tell|"
    "generate|draft|compare|calculate|convert|build|design|name|rewrite|fix".split("|")
)
# Long prompts are mostly pasted material; the instructions sit at the start or the end. Cue
# scanning reads this much of the head and tail only, so its cost is bounded by a constant.
HEAD_CHARS = 1500
TAIL_CHARS = 500
TOKEN_SAMPLE_CHARS = 256


def _sample(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def _estimate_tokens(messages: Sequence[Message], sample: str) -> int:
    """Total tokens of the conversation: tiktoken on a sample gives characters per token,
    applied to every message's length (one tiktoken call per request, whatever its size)."""
    chars = sum(len(m.content) for m in messages)
    if chars <= TOKEN_SAMPLE_CHARS:
        return sum(count_exact(m.content) for m in messages)
    probe = sample[:TOKEN_SAMPLE_CHARS] or next(m.content for m in messages if m.content)
    probe = probe[:TOKEN_SAMPLE_CHARS]
    per_char = count_exact(probe) / len(probe)
    return max(1, round(chars * per_char))


@dataclass(frozen=True, slots=True)
class ScorerWeights:
    """The tunable part of the scorer (from the policy)."""

    bias: float = DEFAULT_BIAS
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)

    def weight(self, feature: str) -> float:
        return self.weights.get(feature, DEFAULT_WEIGHTS[feature])


@dataclass(frozen=True, slots=True)
class Contribution:
    feature: str
    value: float  # the feature, in [0, 1]
    contribution: float  # weight * value


@dataclass(frozen=True, slots=True)
class Score:
    """A score in [0, 1], the prompt's (estimated) tokens, and the features behind it, largest
    contribution first."""

    value: float
    prompt_tokens: int
    contributions: tuple[Contribution, ...]
    # v1 only: every feature's value, which the ledger keeps so that ``policy replay`` can
    # re-score a request under other weights without its prompt.
    inputs: Mapping[str, float] | None = None

    def top(self, n: int = 3) -> tuple[Contribution, ...]:
        return tuple(c for c in self.contributions[:n] if c.contribution > 0)


def _saturate(x: float, at: float) -> float:
    return 0.0 if x <= 0 else min(1.0, x / at)


def _log_scale(x: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, logarithmic in between."""
    if x <= low:
        return 0.0
    return min(1.0, math.log(x / low) / math.log(high / low))


def features(messages: Sequence[Message], max_tokens: int | None) -> dict[str, float]:
    """Each feature of a request, scaled to [0, 1], plus ``_tokens`` (the estimated prompt
    tokens, which the caller pops)."""
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    sample = _sample(last_user)
    lower = sample.lower()
    cue = dict.fromkeys(_CUES, 0)
    for word in set(lower.translate(_WORD_BREAKS).split()):
        category = _WORD_CATEGORY.get(word)
        if category is not None:
            cue[category] += 1
    for category, phrases in _PHRASES.items():
        cue[category] += sum(1 for p in phrases if p in lower)
    code_symbols = (
        2 * sample.count("```")
        + sample.count("{")
        + sample.count(";")
        + sample.count("=>")
        + sample.count("->")
        + sample.count("()")
    )
    math_symbols = 0
    if any(d in sample for d in "0123456789"):
        math_symbols += len(_ARITHMETIC.findall(sample.translate(_DIGITS_TO_ZERO)))
    if "\\" in sample:
        math_symbols += sum(sample.count(mark) for mark in _LATEX_MARKS)
    if not sample.isascii():
        math_symbols += sum(sample.count(mark) for mark in _UNICODE_MARKS)
    lines = sample.splitlines()
    enumerations = sum(1 for line in lines if line.lstrip()[:1] in ("-", "*", "•")) + sum(
        1 for line in lines if line.lstrip()[:2].rstrip(".)").isdigit() and len(line) > 3
    )
    sentences = lower.replace("!", ".").replace("\n", ". ").split(". ")
    questions = sample.count("?") + sum(
        1 for s in sentences if s.lstrip().split(" ", 1)[0] in _IMPERATIVES
    )
    user_turns = sum(1 for m in messages if m.role == "user")
    tokens = _estimate_tokens(messages, sample)
    return {
        "length": _log_scale(tokens, 48, 4096),
        "code": _saturate(cue["code"] + min(code_symbols, 6), 6),
        "math": _saturate(cue["math"] + 2 * math_symbols, 4),
        "reasoning": _saturate(cue["reasoning"], 3),
        "multi_step": _saturate(cue["multi_step"] + enumerations, 4),
        "questions": _saturate(questions - 1, 4),
        "constraints": _saturate(cue["constraints"], 3),
        "depth": _saturate(user_turns - 1, 6),
        "output": _log_scale(max_tokens, 128, 4096) if max_tokens else 0.0,
        "_tokens": float(tokens),
    }


def score(messages: Sequence[Message], max_tokens: int | None, weights: ScorerWeights) -> Score:
    """Score a request. Pure: the same request and weights always give the same score."""
    values = features(messages, max_tokens)
    tokens = int(values.pop("_tokens"))
    contributions = sorted(
        (Contribution(f, values[f], weights.weight(f) * values[f]) for f in FEATURES),
        key=lambda c: c.contribution,
        reverse=True,
    )
    total = weights.bias + sum(c.contribution for c in contributions)
    return Score(
        value=min(1.0, max(0.0, total)),
        prompt_tokens=tokens,
        contributions=tuple(contributions),
        inputs=values,
    )


def rescore(inputs: Mapping[str, float], weights: ScorerWeights) -> float:
    """The v1 score of a request whose features were kept (missing ones are 0)."""
    total = weights.bias + sum(weights.weight(f) * inputs.get(f, 0.0) for f in FEATURES)
    return min(1.0, max(0.0, total))

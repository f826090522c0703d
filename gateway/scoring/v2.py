"""The scorer, version 2: a linear model over the prompt's embedding and the v1 cues.

A request's inputs (``inputs``): the wordllama embedding (256 numbers, unit length) of the last
user message, sampled (its first 1,000 and last 300 characters: the instructions sit at the
start or the end, and the cost stays bounded whatever the prompt's size), then the nine v1
features (which read up to 2,000 characters), then the logarithm of the prompt's tokens. The
model (``tiergate train-scorer --kind v2`` writes it; ``scorer_v2.json`` ships with the package)
is a weighted sum of those inputs passed through a logistic curve, so the score is in (0, 1);
higher means the weak model is more likely to fall short. numpy only (one dot product); about
0.7 ms for a 1,000-token prompt on a loaded 2-core machine, most of it the embedding's
tokenizer (bench/scorer_speed.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adapters.base import Message
from gateway.scoring.embedding import DIMENSIONS, embed, embed_many
from gateway.scoring.features import last_user_text
from gateway.scoring.heuristic import FEATURES, Contribution, Score, features
from gateway.scoring.learned import ArtifactError

FORMAT = "tiergate-scorer-v2"
EMBED_HEAD_CHARS = 1000
EMBED_TAIL_CHARS = 300
DEFAULT_V2_ARTIFACT = Path(__file__).with_name("scorer_v2.json")
# Every input's name, in the model's order.
INPUTS: tuple[str, ...] = (
    *(f"embedding_{k}" for k in range(DIMENSIONS)),
    *FEATURES,
    "log_tokens",
)


def text_of(messages: Sequence[Message]) -> str:
    """What is embedded: the last user message's head and tail."""
    text = last_user_text(messages)
    if len(text) <= EMBED_HEAD_CHARS + EMBED_TAIL_CHARS:
        return text
    return text[:EMBED_HEAD_CHARS] + "\n" + text[-EMBED_TAIL_CHARS:]


def cues(messages: Sequence[Message], max_tokens: int | None) -> tuple[list[float], int]:
    """The v1 features and log tokens (the inputs after the embedding), and the tokens."""
    values = features(messages, max_tokens)
    tokens = int(values.pop("_tokens"))
    return [values[f] for f in FEATURES] + [math.log1p(tokens)], tokens


def inputs(messages: Sequence[Message], max_tokens: int | None) -> tuple[NDArray[np.float64], int]:
    """One request's input vector (in ``INPUTS`` order) and its estimated prompt tokens."""
    rest, tokens = cues(messages, max_tokens)
    vector = np.concatenate([embed(text_of(messages)).astype(np.float64), rest])
    return vector, tokens


def inputs_many(
    requests: Sequence[tuple[Sequence[Message], int | None]],
) -> NDArray[np.float64]:
    """Many requests' input vectors, one row each (the embeddings computed in one batch)."""
    embedded = embed_many([text_of(m) for m, _ in requests]).astype(np.float64)
    rest = np.array([cues(m, t)[0] for m, t in requests], dtype=np.float64)
    return np.hstack([embedded, rest.reshape(len(requests), len(FEATURES) + 1)])


@dataclass(frozen=True, slots=True)
class V2Scorer:
    """A loaded artifact. ``score`` is pure: the same request always gives the same score."""

    source: str
    digest: str
    weights: NDArray[np.float64]  # per input, standardisation folded in
    bias: float
    training: Mapping[str, Any] = field(default_factory=dict)

    def logit(self, vector: NDArray[np.float64]) -> float:
        return float(vector @ self.weights) + self.bias

    def probability(self, vector: NDArray[np.float64]) -> float:
        return _sigmoid(self.logit(vector))

    def score(self, messages: Sequence[Message], max_tokens: int | None) -> Score:
        vector, tokens = inputs(messages, max_tokens)
        parts = vector * self.weights
        dims = DIMENSIONS
        # Contributions on the logit scale: the embedding as one, each cue on its own.
        contributions = [Contribution("embedding", 1.0, float(parts[:dims].sum()))]
        contributions.extend(
            Contribution(name, float(vector[k]), float(parts[k]))
            for k, name in enumerate(INPUTS[dims:], start=dims)
        )
        contributions.sort(key=lambda c: c.contribution, reverse=True)
        return Score(
            value=_sigmoid(float(parts.sum()) + self.bias),
            prompt_tokens=tokens,
            contributions=tuple(contributions),
        )


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def parse_v2(data: bytes, source: str) -> V2Scorer:
    """An artifact's bytes as a scorer; ``ArtifactError`` says what is wrong with them."""
    rebuild = "rebuild it with `tiergate train-scorer --kind v2`"
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ArtifactError(f"not a {FORMAT} file; {rebuild}")
        if raw.get("version") != 1:
            raise ArtifactError(
                f"v2 artifact version {raw.get('version')!r} is not supported (this tiergate "
                f"reads version 1); {rebuild}"
            )
        if tuple(raw["inputs"]) != INPUTS:
            raise ArtifactError(f"its inputs differ from this tiergate's; {rebuild}")
        coef = np.array([float(v) for v in raw["coef"]], dtype=np.float64)
        mean = np.array([float(v) for v in raw["mean"]], dtype=np.float64)
        std = np.array([float(v) or 1.0 for v in raw["std"]], dtype=np.float64)
        if not coef.shape == mean.shape == std.shape == (len(INPUTS),):
            raise ArtifactError(f"coef, mean and std need {len(INPUTS)} numbers each; {rebuild}")
        slope, offset = (float(v) for v in raw["platt"])
        # logit = slope * (intercept + coef · (x - mean) / std) + offset, folded.
        weights = slope * coef / std
        bias = slope * (float(raw["intercept"]) - float((coef * mean / std).sum())) + offset
        weights.setflags(write=False)
        return V2Scorer(
            source=source,
            digest=hashlib.sha256(data).hexdigest()[:16],
            weights=weights,
            bias=bias,
            training=dict(raw.get("training", {})),
        )
    except ArtifactError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"unreadable v2 scorer artifact ({type(exc).__name__}: {exc}); {rebuild}"
        ) from None


_LOADED: dict[Path, V2Scorer] = {}


def load_v2(path: Path | None = None) -> V2Scorer:
    """Load an artifact (default: the one shipped with tiergate). The file is read every time
    (a policy reload picks up a retrained artifact); parsing is cached by the bytes' digest."""
    target = (path or DEFAULT_V2_ARTIFACT).resolve()
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {target} ({exc.strerror})") from None
    cached = _LOADED.get(target)
    if cached is not None and cached.digest == hashlib.sha256(data).hexdigest()[:16]:
        return cached
    scorer = parse_v2(data, str(target))
    _LOADED[target] = scorer
    return scorer

"""The learned scorer: per prompt shape, a linear model over hashed words and the dense cues
of ``features.extract`` plus small boosted trees over the cues, read from a JSON artifact
(``tiergate train-scorer`` writes it; ``learned_scorer.json`` ships with the package).
Evaluation is plain Python: a few hundred array look-ups and tree steps per request, no numpy.

The score is ``P(the strong model is needed)``: the model's output passed through a logistic
curve fitted on held-out predictions (Platt scaling), so a threshold of 0.3 means "send the
requests that need the strong model with probability above 30 % to the strong tier".
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import sys
import zlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adapters.base import Message
from gateway.scoring.features import DENSE, SHAPES, RequestFeatures, extract
from gateway.scoring.heuristic import Contribution, Score

FORMAT = "tiergate-learned-scorer"
DEFAULT_ARTIFACT = Path(__file__).with_name("learned_scorer.json")


class ArtifactError(ValueError):
    """A scorer artifact that cannot be used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Tree:
    """A regression tree as flat node lists (a leaf's ``left`` is -1)."""

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]

    def predict(self, z: Sequence[float]) -> float:
        node = 0
        left = self.left
        while left[node] != -1:
            node = left[node] if z[self.feature[node]] <= self.threshold[node] else self.right[node]
        return self.value[node]


@dataclass(frozen=True, slots=True)
class ShapeModel:
    intercept: float
    dense: tuple[float, ...]  # per standardised dense feature
    hashed: array[int]  # int16 weights, one per bucket
    hashed_scale: float  # weight = hashed[i] * hashed_scale
    platt: tuple[float, float]  # P = sigmoid(a * linear + b)
    trees_base: float = 0.0
    trees: tuple[Tree, ...] = ()

    def boosted(self, z: Sequence[float]) -> float:
        """The trees' part (over the standardised dense cues)."""
        return self.trees_base + sum(t.predict(z) for t in self.trees) if self.trees else 0.0

    def linear(self, buckets: Sequence[int], z: Sequence[float]) -> tuple[float, float]:
        """The hashed part (normalised by the number of buckets) and the dense part."""
        text = 0.0
        if buckets:
            weights = self.hashed
            text = sum(weights[i] for i in buckets) * self.hashed_scale / math.sqrt(len(buckets))
        return text, sum(w * x for w, x in zip(self.dense, z, strict=True))


@dataclass(frozen=True, slots=True)
class LearnedScorer:
    """A loaded artifact. ``score`` is pure: the same request always gives the same score."""

    source: str
    digest: str
    buckets: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    models: Mapping[str, ShapeModel]
    training_config: Mapping[str, Any] = field(default_factory=dict)
    training_sources: tuple[str, ...] = ()  # "name sha256:…" of the files it was trained on

    def score(self, messages: Sequence[Message], max_tokens: int | None) -> Score:
        found = extract(messages, max_tokens, self.buckets)
        model = self.models[found.shape]
        z = self._standardised(found)
        text, dense = model.linear(found.buckets, z)
        trees = model.boosted(z)
        a, b = model.platt
        value = _sigmoid(a * (model.intercept + text + dense + trees) + b)
        # Contributions on the logit scale: what pushed P(strong needed) up or down.
        parts = [Contribution("words", 1.0, a * text), Contribution("cue_trees", 1.0, a * trees)]
        parts.extend(
            Contribution(n, x, a * w * x) for n, x, w in zip(DENSE, z, model.dense, strict=True)
        )
        parts.sort(key=lambda c: c.contribution, reverse=True)
        return Score(value=value, prompt_tokens=found.prompt_tokens, contributions=tuple(parts))

    def probability(self, found: RequestFeatures) -> float:
        """P(strong needed) for features already extracted with ``self.buckets``."""
        model = self.models[found.shape]
        z = self._standardised(found)
        text, dense = model.linear(found.buckets, z)
        a, b = model.platt
        return _sigmoid(a * (model.intercept + text + dense + model.boosted(z)) + b)

    def _standardised(self, found: RequestFeatures) -> list[float]:
        return [(x - m) / s for x, m, s in zip(found.dense, self.mean, self.std, strict=True)]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def encode_weights(values: Sequence[float]) -> tuple[str, float]:
    """int16-quantised, zlib-compressed, base64: (text, scale)."""
    peak = max((abs(v) for v in values), default=0.0)
    scale = peak / 32767 if peak > 0 else 1.0
    quantised = array("h", (round(v / scale) for v in values))
    if quantised.itemsize != 2:  # pragma: no cover - every CPython platform has 16-bit shorts
        raise RuntimeError("array('h') is not 16-bit here")
    raw = quantised.tobytes() if _little_endian() else _swapped(quantised).tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii"), scale


def decode_weights(text: str, count: int) -> array[int]:
    weights = array("h")
    weights.frombytes(zlib.decompress(base64.b64decode(text)))
    if not _little_endian():  # pragma: no cover
        weights = _swapped(weights)
    if len(weights) != count:
        raise ArtifactError(f"{len(weights)} hashed weights, expected {count}")
    return weights


def _little_endian() -> bool:
    return sys.byteorder == "little"


def _swapped(values: array[int]) -> array[int]:
    copy = array("h", values)
    copy.byteswap()
    return copy


def parse_artifact(data: bytes, source: str) -> LearnedScorer:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ArtifactError(f"not a {FORMAT} file; rebuild it with `tiergate train-scorer`")
        if raw.get("version") != 1:
            raise ArtifactError(
                f"artifact version {raw.get('version')!r} is not supported (this tiergate reads "
                f"version 1); rebuild it with `tiergate train-scorer`"
            )
        if tuple(raw["dense"]) != DENSE:
            raise ArtifactError(
                "its dense features differ from this tiergate's; rebuild it with "
                "`tiergate train-scorer`"
            )
        buckets = int(raw["buckets"])
        models = {shape: _shape_model(raw["models"][shape], buckets) for shape in SHAPES}
        return LearnedScorer(
            source=source,
            digest=str(raw.get("digest", "")),
            buckets=buckets,
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) or 1.0 for v in raw["std"]),
            models=models,
            training_config=dict(raw.get("training", {}).get("config", {})),
            training_sources=tuple(str(v) for v in raw.get("training", {}).get("sources", [])),
        )
    except ArtifactError:
        raise
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise ArtifactError(
            f"unreadable scorer artifact ({type(exc).__name__}: {exc}); rebuild it with "
            f"`tiergate train-scorer`"
        ) from None


def _shape_model(raw: Mapping[str, Any], buckets: int) -> ShapeModel:
    dense = tuple(float(v) for v in raw["dense"])
    if len(dense) != len(DENSE):
        raise ArtifactError(f"{len(dense)} dense weights, expected {len(DENSE)}")
    a, b = raw["platt"]
    boosted = raw.get("trees", {"base": 0.0, "trees": []})
    trees = tuple(
        Tree(
            feature=tuple(int(f) for f in t["feature"]),
            threshold=tuple(float(v) for v in t["threshold"]),
            left=tuple(int(c) for c in t["left"]),
            right=tuple(int(c) for c in t["right"]),
            value=tuple(float(v) for v in t["value"]),
        )
        for t in boosted["trees"]
    )
    for tree in trees:
        if any(f >= len(DENSE) for f, c in zip(tree.feature, tree.left, strict=True) if c != -1):
            raise ArtifactError("a tree splits on a dense feature this tiergate does not have")
    return ShapeModel(
        intercept=float(raw["intercept"]),
        dense=dense,
        hashed=decode_weights(raw["hashed"], buckets),
        hashed_scale=float(raw["hashed_scale"]),
        platt=(float(a), float(b)),
        trees_base=float(boosted["base"]),
        trees=trees,
    )


_LOADED: dict[Path, LearnedScorer] = {}


def load_scorer(path: Path | None = None) -> LearnedScorer:
    """Load an artifact (default: the one shipped with tiergate). The file is read every time (a
    policy reload picks up a retrained artifact); decoding is cached by the bytes' digest."""
    target = (path or DEFAULT_ARTIFACT).resolve()
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {target} ({exc.strerror})") from None
    cached = _LOADED.get(target)
    digest = _digest(data)
    if cached is not None and cached.digest == digest:
        return cached
    scorer = replace(parse_artifact(data, str(target)), digest=digest)
    _LOADED[target] = scorer
    return scorer


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]

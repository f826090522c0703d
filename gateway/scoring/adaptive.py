"""The adaptive layer's maths: k nearest labelled neighbours over prompt embeddings, shrunk
toward a base scorer's score. Pure: no database, no clock, no I/O (the ledger keeps the labels,
the routing layer feeds them in).

A *label* says how much a prompt needed the strong model: 1 = the cheaper tier's answer was not
good enough (or the strong model's was better), 0 = the cheaper tier did fine. For a request,
the ``k`` labelled prompts most similar to it (cosine similarity of wordllama embeddings, at
least ``min_similarity``) each weigh ``w = (similarity - min_similarity) / (1 - min_similarity)``
(a near-duplicate weighs ~1, a far one ~0), and the score is

    (prior × base + Σ w × label) / (prior + Σ w)

so a request with no near neighbours keeps its base score, and one with many close ones moves
to what they were labelled. ``prior`` is how many perfect neighbours count as much as the base.
The labels are on the scale of P(strong model needed), as the learned and v2 scorers' scores
are; over v1, whose score is a weighted sum of cues on its own scale, a well-labelled region
moves to the labels' level, so calibrate the thresholds again once labels have accumulated.

Only the labels a request may learn from are candidates: the shared ones (a judge's) and, unless
the policy shares feedback, the feedback labels of its own tenant (``owner_scope``), so one
team's ratings never move another team's routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from adapters.base import Message
from gateway.scoring.embedding import DIMENSIONS
from gateway.scoring.features import last_user_text, sample
from gateway.scoring.heuristic import Contribution, Score

BaseKind = Literal["v1", "learned", "v2"]
FeedbackScope = Literal["team", "shared"]
# Embeddings are kept as little-endian float16: 512 bytes each, cosine error ~1e-3.
_STORED = np.dtype("<f2")
DEFAULT_MAX_LABELS = 20_000  # ~1.5 ms a request for the neighbour search


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """The policy's ``scorer: {kind: adaptive, ...}`` block, compiled."""

    base: BaseKind = "v1"
    k: int = 32
    prior: float = 4.0
    min_similarity: float = 0.3
    store_embeddings: bool = True  # false: keep scoring from the labels there, store no more
    refresh_s: float = 5.0  # how often each replica reads the labels other replicas added
    max_labels: int = DEFAULT_MAX_LABELS  # the newest this many labels are kept in memory
    sample_ttl_h: float = 168.0  # a request's embedding waits this long for its feedback
    # Whose feedback labels move a request's score: its own team's (a key without a team is a
    # team of its own) or everyone's. Labels the gateway makes itself (a judge's) are shared.
    feedback_scope: FeedbackScope = "team"


@dataclass(frozen=True, slots=True)
class Estimate:
    """The blended score and what went into it."""

    value: float
    base: float
    neighbours: int  # how many labelled prompts counted (similarity above the floor)
    weight: float  # their total weight
    neighbour_mean: float | None  # their weighted mean label


def text_of(messages: Sequence[Message]) -> str:
    """What is embedded: the last user message, sampled (its first 1,500 and last 500
    characters), as scorer v2 does."""
    return sample(last_user_text(messages))


def pack(vector: NDArray[np.float32]) -> bytes:
    """An embedding as stored (512 bytes)."""
    if vector.shape != (DIMENSIONS,):
        raise ValueError(f"an embedding has {DIMENSIONS} numbers, got shape {vector.shape}")
    return vector.astype(_STORED).tobytes()


def unpack(data: bytes) -> NDArray[np.float32]:
    if len(data) != DIMENSIONS * _STORED.itemsize:
        raise ValueError(
            f"a stored embedding has {DIMENSIONS * _STORED.itemsize} bytes, got {len(data)}: "
            f"the adaptive_labels table holds something else"
        )
    vector: NDArray[np.float32] = np.frombuffer(data, dtype=_STORED).astype(np.float32)
    return vector


def owner_scope(key_id: str, team: str | None) -> str:
    """The tenant a request belongs to, as its feedback labels record it: its team, or its key
    when it has none (the same grouping as the response cache's ``scope: team``)."""
    return f"team:{team}" if team is not None else f"key:{key_id}"


def feedback_label(quality: float) -> float:
    """A feedback score (0 bad .. 1 good) on a cheaper tier's answer, as a label."""
    return min(1.0, max(0.0, 1.0 - quality))


def blend(
    base: float,
    similarities: NDArray[np.float32],
    labels: NDArray[np.float32],
    settings: AdaptiveSettings,
) -> Estimate:
    """The estimate from the similarities and labels of the candidates (any number)."""
    floor = settings.min_similarity
    if similarities.size > settings.k:
        top = np.argpartition(-similarities, settings.k - 1)[: settings.k]
        similarities, labels = similarities[top], labels[top]
    keep = similarities > floor
    weights = (similarities[keep].astype(np.float64) - floor) / (1.0 - floor)
    total = float(weights.sum())
    if total <= 0.0:
        return Estimate(base, base, 0, 0.0, None)
    mean = float(weights @ labels[keep].astype(np.float64)) / total
    value = (settings.prior * base + total * mean) / (settings.prior + total)
    return Estimate(min(1.0, max(0.0, value)), base, int(keep.sum()), total, mean)


_SHARED = 0  # the owner code of a label every request consults (a judge's)


@dataclass(frozen=True, slots=True)
class _Labels:
    """One whole state of a ``LabelIndex`` (row i of each array is one label)."""

    ids: NDArray[np.int64]
    vectors: NDArray[np.float32]
    values: NDArray[np.float32]
    owners: NDArray[np.int32]  # owner codes: _SHARED, or the tenant's


def _empty() -> _Labels:
    return _Labels(
        np.zeros(0, dtype=np.int64),
        np.zeros((0, DIMENSIONS), dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        np.zeros(0, dtype=np.int32),
    )


class LabelIndex:
    """Labelled embeddings in memory, newest last; grows as labels arrive.

    Each label has an owner: ``None`` for a label every request may learn from (the gateway's
    own, a judge's), else the tenant whose feedback made it (``owner_scope``), which moves only
    that tenant's requests unless the settings share feedback. A label may have a slot (a
    feedback label's request id): a label with a higher id in the same slot replaces it (a
    re-vote), one with a lower id is an older verdict and is skipped.

    Live state (not a frozen value): one per process, fed by the routing layer from the ledger
    (or by the prequential evaluation from earlier rows). Every change replaces the arrays in
    one assignment, so a reader sees a whole state."""

    def __init__(self, max_labels: int = DEFAULT_MAX_LABELS) -> None:
        self.max_labels = max_labels
        self._state = _empty()
        self._seen: set[int] = set()
        self._codes: dict[str, int] = {}  # owner -> its code (_SHARED is 0)
        self._slots: dict[str, int] = {}  # slot -> the id of the label holding it

    def _code(self, owner: str | None) -> int:
        if owner is None:
            return _SHARED
        return self._codes.setdefault(owner, len(self._codes) + 1)

    def __len__(self) -> int:
        return int(self._state.values.size)

    def __contains__(self, label_id: int) -> bool:
        return label_id in self._seen

    def add(
        self,
        ids: Sequence[int],
        vectors: NDArray[np.float32],
        labels: Sequence[float],
        owners: Sequence[str | None] | None = None,
        slots: Sequence[str | None] | None = None,
    ) -> int:
        """Add labelled embeddings (ids already present are skipped); returns how many.
        ``owners``: each label's tenant (``None``, or no list: shared by every request).
        ``slots``: each label's slot (``None``, or no list: none); a newer label of a slot
        replaces the one holding it."""
        fresh: list[int] = []
        replaced: set[int] = set()
        taken: dict[str, int] = {}  # slot -> position in ``fresh`` of this batch's newest
        for i, label_id in enumerate(ids):
            if label_id in self._seen:
                continue
            slot = slots[i] if slots is not None else None
            if slot is not None:
                held = self._slots.get(slot)
                if held is not None and held > label_id:
                    continue  # an older verdict, read late
                earlier = taken.get(slot)
                if earlier is not None:
                    if ids[fresh[earlier]] > label_id:
                        continue
                    fresh[earlier] = i
                    continue
                if held is not None:
                    replaced.add(held)
                taken[slot] = len(fresh)
            fresh.append(i)
        if not fresh:
            return 0
        for slot, position in taken.items():
            self._slots[slot] = int(ids[fresh[position]])
        new_ids = np.asarray([ids[i] for i in fresh], dtype=np.int64)
        codes = [self._code(owners[i] if owners is not None else None) for i in fresh]
        self._seen.update(int(i) for i in new_ids)
        old = self._state
        if replaced:
            keep = ~np.isin(old.ids, np.asarray(sorted(replaced), dtype=np.int64))
            old = _Labels(old.ids[keep], old.vectors[keep], old.values[keep], old.owners[keep])
            self._seen.difference_update(replaced)
        state = _Labels(
            np.concatenate([old.ids, new_ids]),
            np.vstack([old.vectors, np.asarray(vectors, dtype=np.float32)[fresh]]),
            np.concatenate([old.values, np.asarray(labels, dtype=np.float32)[fresh]]),
            np.concatenate([old.owners, np.asarray(codes, dtype=np.int32)]),
        )
        if state.values.size > self.max_labels:
            cut = state.values.size - self.max_labels
            dropped = {int(i) for i in state.ids[:cut]}
            self._seen.difference_update(dropped)
            self._slots = {s: i for s, i in self._slots.items() if i not in dropped}
            state = _Labels(
                state.ids[cut:], state.vectors[cut:], state.values[cut:], state.owners[cut:]
            )
        self._state = state
        return len(fresh)

    def estimate(
        self,
        vector: NDArray[np.float32],
        base: float,
        settings: AdaptiveSettings,
        owner: str | None = None,
    ) -> Estimate:
        """The estimate for a request of tenant ``owner``: from the shared labels and, with
        ``feedback_scope: team``, its own tenant's feedback labels only (``owner`` None: the
        shared labels alone); with ``shared``, from every label."""
        state = self._state  # one consistent state
        if state.values.size == 0:
            return Estimate(base, base, 0, 0.0, None)
        similarities: NDArray[np.float32] = state.vectors @ vector
        labels = state.values
        if settings.feedback_scope == "team":
            code = self._codes.get(owner, -1) if owner is not None else -1
            mine = (state.owners == _SHARED) | (state.owners == code)
            similarities, labels = similarities[mine], labels[mine]
        return blend(base, similarities, labels, settings)


def adapted(base: Score, estimate: Estimate) -> Score:
    """``base`` with the estimate's value; the neighbours' pull shown as a contribution."""
    pull = Contribution(
        "neighbours",
        estimate.neighbour_mean if estimate.neighbour_mean is not None else 0.0,
        estimate.value - estimate.base,
    )
    contributions = sorted((*base.contributions, pull), key=lambda c: -c.contribution)
    return Score(estimate.value, base.prompt_tokens, tuple(contributions), inputs=None)

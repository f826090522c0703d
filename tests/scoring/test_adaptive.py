"""The adaptive layer's maths: it learns a planted rule from labels alone, keeps the base score
where it has no close neighbours, and stores embeddings (never text) compactly."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.base import Message
from gateway.scoring.adaptive import (
    AdaptiveSettings,
    LabelIndex,
    blend,
    feedback_label,
    pack,
    text_of,
    unpack,
)
from gateway.scoring.embedding import embed, embed_many
from gateway.scoring.heuristic import ScorerWeights, score
from tests.support.topics import BAKING, NETWORKING, prompts

SETTINGS = AdaptiveSettings()


def test_learns_a_planted_rule_the_base_scorer_cannot_see() -> None:
    # Networking questions always need the strong model, baking ones never: same sentence
    # shapes, so the v1 scorer gives both topics the same scores.
    weights = ScorerWeights()
    train_a, train_b = prompts(NETWORKING, 30, seed=1), prompts(BAKING, 30, seed=2)
    test_a, test_b = prompts(NETWORKING, 20, seed=3), prompts(BAKING, 20, seed=4)
    base_a = [score(m, None, weights).value for m in test_a]
    base_b = [score(m, None, weights).value for m in test_b]
    assert max(base_b) >= min(base_a)  # the base scorer cannot separate them
    assert abs(float(np.mean(base_a)) - float(np.mean(base_b))) < 0.05

    index = LabelIndex()
    train = [*train_a, *train_b]
    vectors = embed_many([text_of(m) for m in train])
    index.add(list(range(len(train))), vectors, [1.0] * 30 + [0.0] * 30)

    def adaptive(messages: list[tuple[Message, ...]], base: list[float]) -> list[float]:
        return [
            index.estimate(embed(text_of(m)), b, SETTINGS).value
            for m, b in zip(messages, base, strict=True)
        ]

    learned_a, learned_b = adaptive(test_a, base_a), adaptive(test_b, base_b)
    assert min(learned_a) > max(learned_b)
    assert float(np.mean(learned_a)) - float(np.mean(learned_b)) > 0.3


def test_no_labels_or_only_distant_ones_keep_the_base_score() -> None:
    index = LabelIndex()
    query = embed("How do I proof a sourdough loaf overnight?")
    assert index.estimate(query, 0.37, SETTINGS).value == 0.37
    far = embed("kubernetes ingress controller load balancer health checks")
    index.add([1], far[None, :], [1.0])
    estimate = index.estimate(query, 0.37, AdaptiveSettings(min_similarity=0.95))
    assert estimate.value == 0.37
    assert estimate.neighbours == 0


def test_few_neighbours_are_shrunk_toward_the_base_many_are_not() -> None:
    settings = AdaptiveSettings(prior=4.0, min_similarity=0.0, k=100)
    one = blend(0.2, np.array([1.0], np.float32), np.array([1.0], np.float32), settings)
    many = blend(0.2, np.ones(60, np.float32), np.ones(60, np.float32), settings)
    assert one.value == pytest.approx((4 * 0.2 + 1.0) / 5)
    assert many.value == pytest.approx((4 * 0.2 + 60.0) / 64)
    # only the k most similar count
    sims = np.array([0.9, 0.8, 0.1], np.float32)
    top2 = blend(0.0, sims, np.array([0.0, 0.0, 1.0], np.float32), AdaptiveSettings(k=2))
    assert top2.neighbours == 2
    assert top2.neighbour_mean == 0.0


def test_another_tenants_labels_neither_count_nor_crowd_out_ones_own() -> None:
    """With team-scoped feedback, a request consults the shared labels and its own tenant's:
    another tenant's many near-duplicates are left out before the k nearest are taken."""
    query = embed("How do I set up kubernetes ingress controllers?")
    near = np.stack([query] * 40)
    index = LabelIndex()
    index.add(list(range(40)), near, [1.0] * 40, ["team:mallory"] * 40)
    index.add([40, 41], near[:2], [0.0, 0.0], ["team:alpha", None])
    settings = AdaptiveSettings(k=4, prior=1.0)
    alpha = index.estimate(query, 0.5, settings, "team:alpha")
    assert (alpha.neighbours, alpha.neighbour_mean) == (2, 0.0)
    stranger = index.estimate(query, 0.5, settings, "team:beta")
    assert (stranger.neighbours, stranger.neighbour_mean) == (1, 0.0)  # the shared one
    everyone = index.estimate(query, 0.5, AdaptiveSettings(k=4, feedback_scope="shared"))
    assert everyone.neighbour_mean == 1.0


def test_index_skips_known_ids_and_keeps_the_newest() -> None:
    index = LabelIndex(max_labels=3)
    vectors = embed_many(["a b c", "d e f", "g h i", "j k l"])
    assert index.add([1, 2], vectors[:2], [0.0, 1.0]) == 2
    assert index.add([2, 3, 4], vectors[1:], [1.0, 0.0, 1.0]) == 2
    assert len(index) == 3
    assert 1 not in index
    assert 4 in index


def test_a_newer_label_of_a_slot_replaces_the_older_and_one_read_late_is_skipped() -> None:
    """A re-vote: one request (slot) holds one feedback label, the highest id's, whichever
    order the rows are read in; labels without a slot (a judge's) are never replaced."""
    query = embed("How do I set up kubernetes ingress controllers?")
    near = np.stack([query] * 4)
    index = LabelIndex()
    shared = AdaptiveSettings(k=8, feedback_scope="shared")
    assert index.add([5, 6], near[:2], [1.0, 0.5], ["team:a", None], ["r1", None]) == 2
    assert index.add([9], near[:1], [0.0], ["team:a"], ["r1"]) == 1  # r1's re-vote
    assert len(index) == 2
    assert 5 not in index
    assert index.estimate(query, 0.5, shared).neighbour_mean == pytest.approx(0.25)
    assert index.add([7], near[:1], [1.0], ["team:a"], ["r1"]) == 0  # older, read late
    assert index.add([12, 11], near[:2], [1.0, 0.0], ["team:a"] * 2, ["r2", "r2"]) == 1
    assert len(index) == 3
    assert 12 in index
    assert 11 not in index


def test_embeddings_are_stored_as_512_bytes_and_come_back_close() -> None:
    vector = embed("Summarise the plot of Hamlet in two sentences.")
    data = pack(vector)
    assert len(data) == 512
    assert float(unpack(data) @ vector) == pytest.approx(1.0, abs=2e-3)
    with pytest.raises(ValueError, match="512 bytes"):
        unpack(b"not an embedding")


def test_feedback_labels_say_how_much_the_strong_model_was_needed() -> None:
    assert feedback_label(1.0) == 0.0
    assert feedback_label(0.0) == 1.0
    assert feedback_label(0.25) == 0.75

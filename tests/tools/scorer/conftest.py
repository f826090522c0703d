"""The labelled RouteLLM data shipped in bench/data, scored once per session by the shipped
learned scorer (about 15,000 prompts: a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.scoring.learned import load_scorer
from gateway.tools.scorer.labels import LabelSet, read_labels

DATA = (
    Path(__file__).resolve().parents[2] / "bench" / "data" / "routellm" / "routellm_pairs.jsonl.gz"
)


@pytest.fixture(scope="session")
def routellm() -> LabelSet:
    return read_labels([DATA])


@pytest.fixture(scope="session")
def shipped_scores(routellm: LabelSet) -> list[float]:
    scorer = load_scorer()
    return [scorer.score(i.messages, i.max_tokens).value for i in routellm.items]

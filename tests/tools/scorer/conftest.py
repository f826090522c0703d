"""The labelled RouteLLM data, read from the shared data folder beside the checkout (public data
stays outside the project), scored once per session by the shipped learned scorer (about
15,000 prompts: a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.scoring.learned import load_scorer
from gateway.tools.scorer.labels import ROUTELLM_PAIRS, LabelSet, read_labels, shared_data

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def routellm() -> LabelSet:
    # No skip when it is missing: shared_data raises, naming where the data belongs.
    return read_labels([shared_data(ROUTELLM_PAIRS, near=ROOT)])


@pytest.fixture(scope="session")
def shipped_scores(routellm: LabelSet) -> list[float]:
    scorer = load_scorer()
    return [scorer.score(i.messages, i.max_tokens).value for i in routellm.items]

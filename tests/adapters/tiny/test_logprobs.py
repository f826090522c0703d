"""The tiny adapter's token log-probs, from the real SmolLM2 model."""

from __future__ import annotations

import dataclasses
import math

import pytest

from adapters.base import ChatRequest
from adapters.tiny.backend import TinyBackend

pytestmark = pytest.mark.model


async def test_log_probs_of_the_greedy_answer(tiny: TinyBackend) -> None:
    request = ChatRequest.from_prompt(
        "What is the capital of France? Answer in one word.", max_tokens=8, temperature=0.0
    )
    asked = await tiny.acomplete(dataclasses.replace(request, logprobs=True, top_logprobs=3))
    plain = await tiny.acomplete(request)
    assert plain.logprobs is None
    assert asked.text == plain.text  # asking for them changes nothing else
    content = asked.logprobs["content"]
    assert len(content) == asked.usage.completion_tokens
    assert "".join(t["token"] for t in content).strip() == asked.text.strip()
    for token in content:
        assert token["logprob"] <= 0.0
        alternatives = token["top_logprobs"]
        assert len(alternatives) == 3
        # Greedy: the chosen token is the most likely one; the top ones sum to at most 1.
        assert alternatives[0]["logprob"] == pytest.approx(token["logprob"])
        assert sum(math.exp(a["logprob"]) for a in alternatives) <= 1.0 + 1e-6

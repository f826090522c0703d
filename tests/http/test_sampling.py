"""Sampling parameters from an OpenAI body to the backend: the penalties arrive (and change
what the real tiny model writes, past the response cache), a negative seed means no seed, and
the legacy top-level ``function_call`` is refused by name rather than dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.http.helpers import TWO_TIERS, fakes, gateway

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def body(path: str, prompt: str, **fields: Any) -> dict[str, Any]:
    if path == CHAT:
        return {"messages": [{"role": "user", "content": prompt}], **fields}
    return {"prompt": prompt, **fields}


@pytest.fixture
def two_tiers(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(TWO_TIERS)
    return path


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_penalties_and_user_reach_the_backend(two_tiers: Path, path: str) -> None:
    """presence_penalty, frequency_penalty and user arrive in the backend's request, from
    chat and from /v1/completions alike."""
    backends = fakes("small", "big")
    fields = {"presence_penalty": 0.6, "frequency_penalty": -0.4, "user": "u-1"}
    async with gateway(two_tiers, backends=backends) as (client, _):
        response = await client.post(path, json=body(path, "hi", **fields))
    assert response.status_code == 200, response.text
    (sent,) = backends["small"].requests
    assert (sent.presence_penalty, sent.frequency_penalty, sent.user) == (0.6, -0.4, "u-1")


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_unset_penalties_stay_unset(two_tiers: Path, path: str) -> None:
    """Penalties a client leaves out are None: the backend's own default applies."""
    backends = fakes("small", "big")
    async with gateway(two_tiers, backends=backends) as (client, _):
        await client.post(path, json=body(path, "hi"))
    (sent,) = backends["small"].requests
    assert (sent.presence_penalty, sent.frequency_penalty) == (None, None)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_a_negative_seed_is_no_seed(two_tiers: Path, path: str) -> None:
    """llama.cpp reads seed -1 as "pick one at random", so a negative seed reaches backends as
    no seed, and a sampled request with one is never answered from the cache."""
    backends = fakes("small", "big")
    request = body(path, "hi", seed=-1, temperature=0.8)
    async with gateway(two_tiers, backends=backends) as (client, _):
        first = await client.post(path, json=request)
        second = await client.post(path, json=request)
        choices = await client.post(path, json={**request, "n": 2})
    assert first.status_code == second.status_code == choices.status_code == 200
    assert [r.headers["x-tiergate-cache"] for r in (first, second)] == ["off", "off"]
    assert [r.seed for r in backends["small"].requests] == [None] * 4


async def test_a_non_negative_seed_is_kept(two_tiers: Path) -> None:
    """Seed 0 is a seed like any other."""
    backends = fakes("small", "big")
    async with gateway(two_tiers, backends=backends) as (client, _):
        await client.post(CHAT, json=body(CHAT, "hi", seed=0))
    assert backends["small"].requests[0].seed == 0


@pytest.mark.parametrize("value", ["auto", "none", {"name": "lookup"}])
async def test_the_legacy_function_call_is_refused(two_tiers: Path, value: Any) -> None:
    """The top-level ``function_call`` is refused by name like ``functions``, never dropped."""
    backends = fakes("small", "big")
    async with gateway(two_tiers, backends=backends) as (client, _):
        response = await client.post(CHAT, json=body(CHAT, "hi", function_call=value))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "function_call"
    assert "tool_choice" in error["message"]
    assert backends["small"].requests == []


TINY_ONLY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 512}
tiers:
  - {name: tiny, backends: [tiny]}
"""


@pytest.mark.model
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_penalties_change_the_tiny_models_answer(tmp_path: Path, path: str) -> None:
    """Through the gateway to the real tiny model: greedily it repeats "dog"; the same request
    with frequency_penalty 2 is not the cached answer but a fresh one that stops repeating."""
    policy = tmp_path / "tiny.yaml"
    policy.write_text(TINY_ONLY)
    prompt = "Write the word dog ten times, one per line."
    greedy = body(path, prompt, temperature=0, max_tokens=40)
    async with gateway(policy) as (client, app):
        plain = await client.post(path, json=greedy)
        await app.state.cache.flush()  # the answer is stored after the response
        penalised = await client.post(path, json={**greedy, "frequency_penalty": 2.0})
        await app.state.cache.flush()
        again = await client.post(path, json={**greedy, "frequency_penalty": 2.0})

    def text(response: Any) -> str:
        choice = response.json()["choices"][0]
        return str(choice["message"]["content"] if path == CHAT else choice["text"])

    assert plain.status_code == penalised.status_code == 200, penalised.text
    assert penalised.headers["x-tiergate-cache"] == "miss"
    assert again.headers["x-tiergate-cache"] == "hit"  # its own entry
    assert text(plain).lower().count("dog") >= 10
    assert text(penalised).lower().count("dog") < 5
    assert text(again) == text(penalised)

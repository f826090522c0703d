"""``reasoning_effort`` on chat completions: checked against OpenAI's values at the edge (a 400
naming the field), sent upstream by the OpenAI-compatible and the remote (litellm) adapters
(both mocked at the HTTP layer with respx, bodies from OpenAI's API reference), and part of the
response cache key (another effort is another answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from adapters.remote.loader import load_litellm
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
UPSTREAM = "http://upstream.invalid/v1"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
KEY_ENV = "TIERGATE_TEST_OPENAI_KEY"

COMPAT = f"""
version: 1
backends:
  local: {{type: openai_compat, model: gpt-oss-20b, base_url: "{UPSTREAM}", http_client: httpx}}
tiers:
  - {{name: only, backends: [local]}}
"""
REMOTE = f"""
version: 1
backends:
  hosted: {{type: remote, model: openai/o4-mini, api_key_env: {KEY_ENV}}}
tiers:
  - {{name: only, backends: [hosted]}}
"""

# OpenAI's API reference: a chat completion (a reasoning model's: reasoning tokens in the usage).
COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "o4-mini-2025-04-16",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The square root of 2 is irrational.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}
MODELS = {
    "object": "list",
    "data": [{"id": "gpt-oss-20b", "object": "model", "created": 1686935002, "owned_by": "me"}],
}


def chat(**fields: Any) -> dict[str, Any]:
    prompt = [{"role": "user", "content": "Is the square root of 2 rational?"}]
    return {"model": "auto", "messages": prompt, "temperature": 0, **fields}


@pytest.fixture
def httpx_litellm() -> Iterator[None]:
    """litellm's aiohttp transport bypasses httpx, where respx intercepts."""
    lib = load_litellm()
    saved = lib.disable_aiohttp_transport
    lib.disable_aiohttp_transport = True
    yield
    lib.disable_aiohttp_transport = saved


def sent(route: respx.Route, call: int) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[call].request.content)
    return body


async def test_the_openai_compatible_server_is_sent_it(tmp_path: Path) -> None:
    """Set, it is in the upstream's body as the client sent it; unset, it is absent. Another
    effort is another cache key: answered by the upstream again, not replayed."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(COMPAT)
    with respx.mock(assert_all_mocked=True) as router:
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        route = router.post(f"{UPSTREAM}/chat/completions").respond(200, json=COMPLETION)
        async with gateway(policy, ledger=False) as (client, app):
            low = await client.post(CHAT, json=chat(reasoning_effort="low"))
            await app.state.cache.flush()  # the answer is kept in the background
            again = await client.post(CHAT, json=chat(reasoning_effort="low"))
            high = await client.post(CHAT, json=chat(reasoning_effort="high"))
            unset = await client.post(CHAT, json=chat())
    for response in (low, again, high, unset):
        assert response.status_code == 200, response.text
    assert [r.headers["x-tiergate-cache"] for r in (low, again, high, unset)] == [
        "miss",
        "hit",
        "miss",
        "miss",
    ]
    assert route.call_count == 3
    assert sent(route, 0)["reasoning_effort"] == "low"
    assert sent(route, 1)["reasoning_effort"] == "high"
    assert "reasoning_effort" not in sent(route, 2)


@pytest.mark.usefixtures("httpx_litellm")
async def test_a_remote_reasoning_model_is_sent_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through litellm, OpenAI's o4-mini gets ``reasoning_effort`` in its chat request."""
    monkeypatch.setenv(KEY_ENV, "sk-test-0123456789abcdef")
    policy = tmp_path / "policy.yaml"
    policy.write_text(REMOTE)
    with respx.mock(assert_all_mocked=False) as router:
        route = router.post(OPENAI_URL).respond(200, json=COMPLETION)
        async with gateway(policy, ledger=False) as (client, _):
            response = await client.post(CHAT, json=chat(reasoning_effort="minimal"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("The square root")
    assert sent(route, 0)["reasoning_effort"] == "minimal"


@pytest.mark.parametrize("value", ["extreme", "", 3, ["low"]])
async def test_a_value_openai_does_not_define_is_a_400_naming_the_field(
    tmp_path: Path, value: Any
) -> None:
    """Not one of OpenAI's values: refused before any backend, naming the field and the values
    it takes (was: accepted and dropped)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(COMPAT)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        route = router.post(f"{UPSTREAM}/chat/completions").respond(200, json=COMPLETION)
        async with gateway(policy, ledger=False) as (client, _):
            response = await client.post(CHAT, json=chat(reasoning_effort=value))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "reasoning_effort"
    assert "reasoning_effort" in error["message"]
    assert "'minimal'" in error["message"]
    assert "'high'" in error["message"]
    assert route.call_count == 0


async def test_a_responses_clients_reasoning_effort_is_sent_as_chat_s(tmp_path: Path) -> None:
    """Responses' ``reasoning: {effort}`` is chat's ``reasoning_effort`` upstream (was: accepted
    and dropped); a summary setting is accepted, and an effort OpenAI does not define is a 400
    naming ``reasoning.effort``."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(COMPAT)
    body = {"model": "auto", "input": "Is the square root of 2 rational?", "temperature": 0}
    with respx.mock(assert_all_mocked=True) as router:
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        route = router.post(f"{UPSTREAM}/chat/completions").respond(200, json=COMPLETION)
        async with gateway(policy, ledger=False) as (client, _):
            high = await client.post(
                "/v1/responses", json={**body, "reasoning": {"effort": "high", "summary": "auto"}}
            )
            wrong = await client.post("/v1/responses", json={**body, "reasoning": {"effort": "x"}})
    assert high.status_code == 200, high.text
    assert high.json()["output"][0]["content"][0]["text"].startswith("The square root")
    assert route.call_count == 1
    assert sent(route, 0)["reasoning_effort"] == "high"
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"]["param"] == "reasoning.effort"
    assert "'medium'" in wrong.json()["error"]["message"]

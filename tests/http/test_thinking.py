"""Anthropic's extended ``thinking`` on ``/v1/messages``: checked at the edge by Anthropic's rules
(a 400 in Anthropic's shape naming the field), passed on to the backends (the remote tier
through litellm, mocked at the HTTP layer with respx, bodies from Anthropic's documentation;
the Ollama mapping is in tests/adapters/ollama), and part of the response cache key. The
thinking blocks of answers, with the official SDK: tests/http/test_thinking_sdk.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import respx

from adapters.base import Thinking
from adapters.remote.loader import load_litellm
from tests.http.helpers import fakes, gateway

MESSAGES = "/v1/messages"
HEADERS = {"anthropic-version": "2023-06-01"}
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
KEY_ENV = "TIERGATE_TEST_ANTHROPIC_KEY"
FAKES = """
version: 1
backends:
  small: {type: fake, model: small-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.9, backends: [small]}
  - {name: strong, backends: [big]}
"""
REMOTE = f"""
version: 1
backends:
  claude: {{type: remote, model: anthropic/claude-sonnet-4-5-20250929, api_key_env: {KEY_ENV}}}
tiers:
  - {{name: remote, backends: [claude]}}
"""
# https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking: an answer with a
# thinking block (its signature shortened) before the text.
THOUGHT_ANSWER = {
    "id": "msg_01DZyBp4Wp7Vh5N2gQ3H8qbx",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me analyze this step by step...",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEcz",
        },
        {"type": "text", "text": "Based on my analysis, the answer is 42."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 40, "output_tokens": 420},
}


def ask(**fields: Any) -> dict[str, Any]:
    prompt = [{"role": "user", "content": "What is the answer to everything?"}]
    return {"model": "auto", "max_tokens": 4096, "messages": prompt, **fields}


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "param", "says"),
    [
        pytest.param(
            {"type": "enabled", "budget_tokens": 1000},
            4096,
            "thinking.budget_tokens",
            "greater than or equal to 1024",
            id="budget-below-1024",
        ),
        pytest.param(
            {"type": "enabled", "budget_tokens": 4096},
            4096,
            "thinking.budget_tokens",
            "4096 must be less than max_tokens (4096)",
            id="budget-not-below-max-tokens",
        ),
        pytest.param(
            {"type": "enabled"}, 4096, "thinking.budget_tokens", "required", id="no-budget"
        ),
        pytest.param(
            {"type": "enabled", "budget_tokens": "2048"},
            4096,
            "thinking.budget_tokens",
            "integer",
            id="budget-a-string",
        ),
        pytest.param({"type": "on"}, 4096, "thinking", "'enabled'", id="unknown-type"),
        pytest.param(
            {"type": "disabled", "budget_tokens": 2048},
            4096,
            "thinking.budget_tokens",
            "unrecognized",
            id="budget-when-disabled",
        ),
    ],
)
async def test_bad_thinking_is_a_400_naming_the_field(
    tmp_path: Path, thinking: dict[str, Any], max_tokens: int, param: str, says: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAKES)
    backends = fakes("small", "big")
    async with gateway(policy, backends=backends, ledger=False) as (client, _app):
        response = await client.post(
            MESSAGES, json=ask(thinking=thinking, max_tokens=max_tokens), headers=HEADERS
        )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    message = error["error"]["message"]
    assert message.startswith(f"{param}"), message
    assert says in message
    assert "Traceback" not in response.text
    assert backends["small"].requests == backends["big"].requests == []


async def test_valid_thinking_reaches_the_backend(tmp_path: Path) -> None:
    """Each form Anthropic takes reaches the backend as the request's thinking; count_tokens
    checks it too (no max_tokens there: only the minimum budget)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAKES)
    backends = fakes("small", "big")
    forms = [
        {"type": "enabled", "budget_tokens": 2048},
        {"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
        {"type": "adaptive"},
        {"type": "disabled"},
    ]
    async with gateway(policy, backends=backends, ledger=False) as (client, _app):
        for form in forms:
            response = await client.post(MESSAGES, json=ask(thinking=form), headers=HEADERS)
            assert response.status_code == 200, response.text
        counted = await client.post(
            f"{MESSAGES}/count_tokens",
            json={**ask(thinking={"type": "enabled", "budget_tokens": 512})},
            headers=HEADERS,
        )
    seen = [r.thinking for r in backends["small"].requests + backends["big"].requests]
    assert seen == [
        Thinking("enabled", budget_tokens=2048),
        Thinking("enabled", budget_tokens=1024, display="omitted"),
        Thinking("adaptive"),
        Thinking("disabled"),
    ]
    assert counted.status_code == 400
    assert counted.json()["error"]["message"].startswith("thinking.budget_tokens")


async def test_thinking_is_part_of_the_cache_key(tmp_path: Path) -> None:
    """The same prompt with thinking on, off or at another budget is another answer."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAKES)
    backends = fakes("small", "big")
    greedy = {"temperature": 0}
    on = {"type": "enabled", "budget_tokens": 2048}
    async with gateway(policy, backends=backends, ledger=False) as (client, app):
        labels = []
        for thinking in (on, on, {"type": "enabled", "budget_tokens": 3000}, None, None):
            body = ask(**greedy, **({"thinking": thinking} if thinking else {}))
            response = await client.post(MESSAGES, json=body, headers=HEADERS)
            assert response.status_code == 200, response.text
            labels.append(response.headers["x-tiergate-cache"])
            await app.state.cache.flush()  # the answer is kept in the background
    assert labels == ["miss", "hit", "miss", "miss", "hit"]


@pytest.fixture
def httpx_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm's aiohttp transport bypasses httpx, where respx intercepts."""
    monkeypatch.setattr(load_litellm(), "disable_aiohttp_transport", True)
    monkeypatch.setenv(KEY_ENV, "sk-ant-test-0123456789")


@pytest.mark.usefixtures("httpx_litellm")
async def test_a_remote_anthropic_model_is_asked_to_think(tmp_path: Path) -> None:
    """Through litellm, Anthropic's Messages call carries ``thinking`` as the client sent it
    (left out when the client did); the answer comes back with its thinking block first,
    signature intact."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(REMOTE)
    on = {"type": "enabled", "budget_tokens": 2048}
    with respx.mock(assert_all_mocked=False) as router:
        upstream = router.post(ANTHROPIC_URL).respond(200, json=THOUGHT_ANSWER)
        async with gateway(policy, ledger=False) as (client, _app):
            thought = await client.post(MESSAGES, json=ask(thinking=on), headers=HEADERS)
            plain = await client.post(MESSAGES, json=ask(), headers=HEADERS)
    assert thought.status_code == plain.status_code == 200, thought.text
    first, second = (json.loads(call.request.content) for call in upstream.calls)
    assert first["thinking"] == on
    assert first["max_tokens"] == 4096
    assert "thinking" not in second
    answer = thought.json()
    assert answer["content"] == THOUGHT_ANSWER["content"]
    assert answer["usage"]["output_tokens"] == 420


@pytest.mark.usefixtures("httpx_litellm")
async def test_a_tool_round_trip_goes_without_thinking(tmp_path: Path) -> None:
    """After a turn that called a tool, Anthropic wants that turn's thinking block back; a
    client that dropped it would be refused with thinking on ("Expected `thinking` or
    `redacted_thinking`, but found `tool_use`"), so that call goes without thinking and the
    conversation goes on; thinking disabled is still sent. (With the block sent back, thinking
    stays on: tests/http/test_thinking_sdk.py.)"""
    policy = tmp_path / "policy.yaml"
    policy.write_text(REMOTE)
    weather = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    turns = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "22 degrees, sunny",
                }
            ],
        },
    ]
    with respx.mock(assert_all_mocked=False) as router:
        upstream = router.post(ANTHROPIC_URL).respond(200, json=THOUGHT_ANSWER)
        async with gateway(policy, ledger=False) as (client, _app):
            for thinking in ({"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}):
                body = ask(messages=turns, tools=[weather], thinking=thinking)
                response = await client.post(MESSAGES, json=body, headers=HEADERS)
                assert response.status_code == 200, response.text
    on, off = (json.loads(call.request.content) for call in upstream.calls)
    assert "thinking" not in on
    assert off["thinking"] == {"type": "disabled"}
    assert [m["role"] for m in on["messages"]] == ["user", "assistant", "user"]

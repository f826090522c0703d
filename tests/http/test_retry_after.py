"""A 503 because every candidate's circuit breaker is open says when the first one lets a probe
through (``Retry-After``), so the SDKs' retries wait for it instead of arriving while it is
still open (their own back-off is 0.5 s, 1 s, ...; tests/sdk_js checks the Node SDKs wait)."""

from __future__ import annotations

from pathlib import Path

from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  down: {type: fake, model: down-model, script: [{error: unavailable}]}
tiers:
  - {name: only, backends: [down]}
breaker: {failures: 1, cooldown_s: 600}
retries: {per_backend: 0}
"""
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {**CHAT, "max_tokens": 8}


async def test_an_open_breaker_s_503_says_when_to_come_back(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with gateway(policy) as (client, _):
        tried = await client.post("/v1/chat/completions", json=CHAT)
        skipped = await client.post("/v1/chat/completions", json=CHAT)
        anthropic = await client.post("/v1/messages", json=MESSAGE)
    # The failure that opened it: nobody knows when the backend is back.
    assert tried.status_code == 503
    assert tried.json()["error"]["code"] == "backend_unavailable"
    assert "retry-after" not in tried.headers
    # Skipped while open: the breaker's cooldown, in whole seconds rounded up.
    assert skipped.status_code == 503
    assert skipped.json()["error"]["code"] == "no_backend_available"
    assert "next probe in" in skipped.json()["error"]["message"]
    assert 590 <= int(skipped.headers["retry-after"]) <= 600
    assert anthropic.status_code == 503
    assert anthropic.json()["type"] == "error"
    assert 590 <= int(anthropic.headers["retry-after"]) <= 600


TWO = """
version: 1
backends:
  first: {type: fake, model: first-model, script: [{error: unavailable}]}
  second: {type: fake, model: second-model, script: [{error: unavailable}]}
tiers:
  - {name: only, backends: [first, second]}
breaker: {failures: 1, cooldown_s: 600}
retries: {per_backend: 0}
"""


async def test_a_503_with_the_others_open_says_when_the_first_probes(tmp_path: Path) -> None:
    """One candidate tried and down (an upstream 503 with no retry-after), the other skipped
    with its breaker open: the earliest probe is still when a retry can be answered."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO)
    async with gateway(policy) as (client, _):
        opened = await client.post("/v1/chat/completions", json={**CHAT, "model": "second"})
        mixed = await client.post("/v1/chat/completions", json=CHAT)
        anthropic = await client.post("/v1/messages", json={**MESSAGE, "model": "first"})
    assert opened.status_code == 503
    assert "retry-after" not in opened.headers
    assert mixed.status_code == 503
    assert mixed.json()["error"]["code"] == "backend_unavailable"
    message = mixed.json()["error"]["message"]
    assert "first:" in message
    assert "second: skipped" in message
    assert 590 <= int(mixed.headers["retry-after"]) <= 600
    # Both open now: skipped outright, the cooldown as before.
    assert anthropic.status_code == 503
    assert 590 <= int(anthropic.headers["retry-after"]) <= 600

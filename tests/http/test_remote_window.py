"""A policy with an enabled remote backend reads litellm's model map while the gateway starts,
so the first request is judged against the model's real context window (not a default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routing.pool import UNKNOWN_CONTEXT_WINDOW
from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  remote: {type: remote, model: openai/gpt-4o-mini, api_key_env: TIERGATE_TEST_OPENAI_KEY}
tiers:
  - {name: remote, backends: [remote]}
"""


async def test_the_remote_window_is_known_when_serving_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERGATE_TEST_OPENAI_KEY", "sk-test-not-a-real-key")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with gateway(policy, ledger=False) as (_http, app):
        window = app.state.runtime.active.pool.capabilities("remote").context_window
    assert window is not None
    assert window > UNKNOWN_CONTEXT_WINDOW  # gpt-4o-mini's, from litellm's bundled map

"""An Ollama candidate pinned by digest: checked against Ollama's /api/tags (mocked with
respx, in Ollama's documented shape) when the canary starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx

from adapters.fake import FakeBackend
from gateway.canary.controller import CanaryController
from tests.http.helpers import gateway

FULL = "sha256:9f4bd8a2c1e7d6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a3928171605f4e3"
POLICY = """
version: 1
backends:
  small: {type: fake}
  cand: {type: ollama, model: "qwen2.5:3b", prewarm: false}
tiers:
  - {name: cheap, backends: [small]}
canary:
  name: c1
  candidate: cand
  tier: cheap
  mode: split
  percent: 100
  pin: {digest: %s}
  evaluate_every_s: 3600
"""


def _tags(digest: str) -> httpx.Response:
    model = {"name": "qwen2.5:3b", "model": "qwen2.5:3b", "digest": digest, "size": 1}
    return httpx.Response(200, json={"models": [model]})


async def _status(tmp_path: Path, pinned: str, served: str) -> tuple[str, str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY % pinned)
    fakes = {"small": FakeBackend.scripted("small", "stable"), "cand": FakeBackend("cand")}
    with respx.mock(assert_all_called=False) as mock:
        mock.get("http://127.0.0.1:11434/api/tags").mock(return_value=_tags(served))
        async with gateway(policy, backends=fakes) as (client, app):
            canary: CanaryController = app.state.canary
            assert canary.current is not None
            answer = await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
            )
            return (
                canary.current.status,
                canary.current.reason,
                answer.headers["x-tiergate-backend"],
            )


async def test_a_matching_digest_starts_the_canary(tmp_path: Path) -> None:
    """The short ID `ollama list` prints matches the full digest: the canary runs."""
    status, _, backend = await _status(tmp_path, "9f4bd8a2c1e7", FULL)
    assert (status, backend) == ("running", "cand")


async def test_a_different_digest_pauses_the_canary(tmp_path: Path) -> None:
    """Another build under the same tag: the canary is paused with both digests named, and the
    candidate takes no traffic."""
    other = "sha256:" + "1" * 64
    status, reason, backend = await _status(tmp_path, "9f4bd8a2c1e7", other)
    assert status == "paused"
    assert other in reason
    assert "9f4bd8a2c1e7" in reason
    assert backend == "small"


async def test_a_restart_checks_the_pin_again(tmp_path: Path) -> None:
    """A rolled-back canary is restarted only once Ollama serves the pinned build: while it
    serves another one the restart is refused (409, both digests named)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY % "9f4bd8a2c1e7")
    fakes = {"small": FakeBackend.scripted("small", "stable"), "cand": FakeBackend("cand")}
    other = "sha256:" + "1" * 64
    with respx.mock(assert_all_called=False) as mock:
        tags = mock.get("http://127.0.0.1:11434/api/tags")
        tags.mock(return_value=_tags(FULL))
        async with gateway(policy, backends=fakes) as (client, app):
            canary: CanaryController = app.state.canary
            assert (await client.post("/admin/canary/rollback")).status_code == 200
            tags.mock(return_value=_tags(other))
            refused = await client.post("/admin/canary/restart")
            assert refused.status_code == 409
            assert other in refused.json()["error"]["message"]
            assert _state(canary) == "rolled_back"
            tags.mock(return_value=_tags(FULL))
            assert (await client.post("/admin/canary/restart")).status_code == 200
            assert _state(canary) == "running"


def _state(canary: CanaryController) -> str:
    assert canary.current is not None
    return canary.current.status

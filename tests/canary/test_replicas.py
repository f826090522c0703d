"""Two gateway processes (``tiergate serve --workers 2``, each with its own hash seed) put every
sticky key on the same arm, and agree with the assignment computed here."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.canary.assign import in_candidate
from tests.http.live_server import API_KEY, Server

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
  cand: {type: fake, model: cand-model}
tiers:
  - {name: cheap, backends: [small]}
canary:
  name: replicas
  candidate: cand
  tier: cheap
  mode: split
  percent: 30
  sticky: {by: user}
"""


def _backend(server: Server, user: str) -> str:
    # A fresh connection each time, so the kernel may hand it to either worker.
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "user": user},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 200, response.text
    return response.headers["x-tiergate-backend"]


def test_worker_processes_agree_on_every_key(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, watch=False, workers=2)
    try:
        server.wait_ready()
        server.wait_count("gateway_started", 2)
        users = [f"person-{i}" for i in range(30)]
        for user in users:
            seen = {_backend(server, user) for _ in range(4)}
            expected = "cand" if in_candidate("replicas", f"user:{user}", 30.0) else "small"
            assert seen == {expected}, user
    finally:
        server.stop()

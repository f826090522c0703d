"""SIGTERM during a stream: a real ``tiergate serve`` drains requests in flight for
TIERGATE_DRAIN_S, then cuts what is left and stops cleanly, every line of its log JSON
(uvicorn's own records about the cut too: a log pipeline reads one object a line). The
manifests set the drain from the policy's ``timeouts.total_s`` and the grace period from it
(test_kubernetes.py, test_compose.py); here, that the server honours it. Paced by the fake
backend, waiting on the stream and the process, never sleeping."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.http.live_server import API_KEY, WAIT_S, Server

WORDS = 40
REPLY = " ".join(f"w{i}" for i in range(WORDS))
# 40 words at 4 a second: a stream of about 10 s, far longer than the 1 s drain below and far
# shorter than the 30 s default.
POLICY = f"""
version: 1
backends:
  slow: {{type: fake, model: slow-model, tokens_per_second: 4, script: [{{reply: "{REPLY}"}}]}}
tiers:
  - {{name: only, backends: [slow]}}
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_sigterm_drains_for_tiergate_drain_s_then_stops(tmp_path: Path, workers: int) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, watch=False, workers=workers, env={"TIERGATE_DRAIN_S": "1"})
    try:
        server.wait_ready()
        lines: list[str] = []
        with httpx.stream(
            "POST",
            f"{server.base_url}/v1/chat/completions",
            json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {API_KEY}"},
            timeout=WAIT_S,
        ) as response:
            assert response.status_code == 200
            received = response.iter_lines()
            for line in received:
                lines.append(line)
                if line.startswith("data: {"):
                    break  # the stream is under way: now the signal
            server.proc.send_signal(signal.SIGTERM)
            # Cut mid-stream, the connection closes without the last chunk.
            with contextlib.suppress(httpx.RemoteProtocolError):
                for line in received:
                    lines.append(line)
        try:
            code = server.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after SIGTERM:\n{server.log()}") from None
    finally:
        server.stop()
    # Cut after the drain, not run to its end (the default drain, 30 s, would have let it).
    assert "data: [DONE]" not in lines, server.log()
    assert sum(line.startswith("data: {") for line in lines) < WORDS
    assert code in (0, -signal.SIGTERM), server.log()
    assert server.events("gateway_stopped"), server.log()
    # uvicorn's records (the cancelled task, the cut request's exception) are JSON lines too.
    not_json = [line for line in server.log().splitlines() if not _json_object(line)]
    assert not_json == [], server.log()
    records = [json.loads(line) for line in server.log().splitlines()]
    (cut,) = (r for r in records if str(r["event"]).startswith("Exception in ASGI application"))
    assert cut["level"] == "error"
    assert cut["logger"] == "uvicorn.error"
    assert "CancelledError" in cut["exception"], server.log()


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False

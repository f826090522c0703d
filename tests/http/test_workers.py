"""``tiergate serve --workers N``: several processes, one port, one policy, merged metrics."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.http.live_server import (
    API_KEY,
    GENEROUS,
    STRICT,
    WAIT_S,
    Server,
    fake_policy,
    hash_of,
    replace_file,
)

WORKERS = 2


def requests_total(server: Server) -> float:
    response = server.http.get("/metrics", headers={"authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "tiergate_requests_total"
    )


def fresh_connection_chat(server: Server) -> httpx.Response:
    """A request on a new connection: SO_REUSEPORT spreads new connections over the workers."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]},
            headers={"authorization": f"Bearer {API_KEY}"},
        )


def test_workers_share_the_port_the_metrics_and_the_reload(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """Every worker starts, requests served by any worker are counted once in /metrics, a
    SIGHUP to the parent reloads every worker in place, and SIGTERM stops them all."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(cheap_max=GENEROUS))
    server = serve(policy, watch=False, workers=WORKERS)
    server.wait_count("gateway_started", WORKERS)
    started = server.wait_for("workers_started")
    assert len(started["pids"]) == WORKERS

    before = requests_total(server)
    answered = [fresh_connection_chat(server) for _ in range(20)]
    assert all(r.status_code == 200 for r in answered)
    assert requests_total(server) - before == 20

    mark = server.mark()
    replace_file(policy, fake_policy(cheap_max=STRICT))
    server.proc.send_signal(signal.SIGHUP)
    applied = server.wait_count("policy_applied", WORKERS, since=mark)
    assert {e["trigger"] for e in applied} == {"sighup"}
    assert {e["hash"] for e in applied} == {hash_of(policy)}
    hashes = {fresh_connection_chat(server).headers["x-tiergate-policy"] for _ in range(10)}
    assert hashes == {hash_of(policy)}

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=WAIT_S) == 0
    stopped = server.wait_count("gateway_stopped", WORKERS)
    assert len(stopped) == WORKERS
    leftovers = subprocess.run(
        ["pgrep", "-f", "tiergate-worker|gateway.workers"], capture_output=True, text=True
    )
    assert str(started["pids"][0]) not in leftovers.stdout.split()

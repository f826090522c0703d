"""``tiergate serve --workers N``: several processes, one port, one policy, merged metrics."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
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
from tests.http.test_reload import INVALID, INVALID_PATH

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


def active_hashes(server: Server) -> set[str]:
    """The policy hashes some live worker serves (tiergate_policy_info is the highest value
    among the live workers: a hash shows 1 while any worker still has it)."""
    response = server.http.get("/metrics", headers={"authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    return {
        sample.labels["hash"]
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "tiergate_policy_info" and sample.value == 1
    }


def wait_for_hashes(server: Server, expected: set[str]) -> None:
    """Poll /metrics until the live workers serve exactly ``expected`` (bounded)."""
    deadline = time.monotonic() + WAIT_S
    seen = active_hashes(server)
    while seen != expected:
        assert time.monotonic() < deadline, f"workers serve {seen}, not {expected}"
        with contextlib.suppress(subprocess.TimeoutExpired):  # a server that dies fails at once
            server.proc.wait(timeout=0.05)
        assert server.proc.returncode is None, server.log()
        seen = active_hashes(server)


def test_the_admin_reload_reloads_every_worker(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """POST /admin/policy/reload, taken by one worker, reloads every worker (as SIGHUP to the
    parent does): then every worker serves the new hash, and the answer says how many do. An
    invalid policy is still a 422 with its reason, and no worker changes."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(cheap_max=GENEROUS))
    server = serve(policy, watch=False, workers=WORKERS)
    server.wait_count("gateway_started", WORKERS)
    assert active_hashes(server) == {hash_of(policy)}

    replace_file(policy, fake_policy(cheap_max=STRICT))
    new = hash_of(policy)
    reloaded = server.admin_reload()
    assert reloaded.status_code == 200, reloaded.text
    wait_for_hashes(server, {new})
    hashes = {fresh_connection_chat(server).headers["x-tiergate-policy"] for _ in range(10)}
    assert hashes == {new}
    body = reloaded.json()
    assert (body["applied"], body["hash"]) == (True, new)
    workers = body["workers"]
    assert (workers["count"], workers["answered"], workers["serving"]) == (WORKERS,) * 3
    assert {w["pid"] for w in workers["each"]} == set(server.wait_for("workers_started")["pids"])
    assert all(w["applied"] and w["trigger"] == "admin" for w in workers["each"])
    assert server.reloads() == {("applied", "admin"): WORKERS}

    replace_file(policy, INVALID)
    rejected = server.admin_reload()
    assert rejected.status_code == 422
    assert any(f"{INVALID_PATH}: unknown backend 'huge'" in p for p in rejected.json()["problems"])
    assert "workers" not in rejected.json()  # rejected by the first: passed on to none
    assert active_hashes(server) == {new}
    assert server.reloads() == {("applied", "admin"): WORKERS, ("rejected", "admin"): 1}

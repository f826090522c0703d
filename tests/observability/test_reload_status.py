"""A rejected policy reload shows where an operator looks without reading the log: ``/readyz``
says the last good policy serves, not the file, and ``tiergate_policy_reload_ok`` is 0 until a
reload succeeds (a counter of rejections stays up after the file is fixed), against a real
``tiergate serve`` reloaded by a real ``SIGHUP``."""

from __future__ import annotations

import signal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.http.live_server import ADMIN_KEY, API_KEY, Server, fake_policy, hash_of, replace_file

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {API_KEY}"}
BROKEN = fake_policy().replace("backends: [big]", "backends: [huge]")


def sighup(server: Server, event: str) -> None:
    """Send SIGHUP and wait for the reload's log event."""
    mark = server.mark()
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(event, since=mark, trigger="sighup")


def reload_ok(server: Server) -> float:
    text = server.http.get("/metrics", headers=ADMIN).text
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tiergate_policy_reload_ok"
    ]
    return value


def test_a_rejected_reload_shows_on_readyz_and_metrics_until_one_succeeds(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Before any reload: ready, no reload, the gauge 1. A broken file sent by SIGHUP: degraded
    (still 200), the reload ``rejected`` with its trigger and, for the operator only, the
    problem naming the file and the field; the gauge 0. The file put back: ready,
    ``unchanged``, 1. Broken again, then fixed: ready, ``applied``, 1."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    good = hash_of(policy)
    server = Server(policy, watch=False)
    servers.append(server)
    server.wait_ready()
    first = server.http.get("/readyz", headers=ADMIN).json()
    assert (first["status"], first["policy"], first["policy_reload"]) == ("ready", good, None)
    assert reload_ok(server) == 1

    replace_file(policy, BROKEN)
    sighup(server, "policy_rejected")
    seen = server.http.get("/readyz", headers=ADMIN)
    assert seen.status_code == 200
    body = seen.json()
    assert (body["status"], body["policy"]) == ("degraded", good)
    reload = body["policy_reload"]
    assert (reload["result"], reload["trigger"]) == ("rejected", "sighup")
    assert reload["at"].endswith("+00:00")
    assert (
        f"{policy}: tiers[1].backends[0]: unknown backend 'huge' (known: big, small) (line 8)"
        in reload["problems"]
    ), reload
    client = server.http.get("/readyz", headers=CLIENT).json()
    assert client["policy_reload"] == {**reload, "problems": None}
    assert reload_ok(server) == 0

    # The file put back as it was: the policy serving again, though none was applied.
    replace_file(policy, fake_policy())
    sighup(server, "policy_unchanged")
    back = server.http.get("/readyz", headers=ADMIN).json()
    assert (back["status"], back["policy_reload"]["result"]) == ("ready", "unchanged")
    assert reload_ok(server) == 1

    replace_file(policy, BROKEN)
    sighup(server, "policy_rejected")
    assert reload_ok(server) == 0
    replace_file(policy, fake_policy(small="fixed"))
    sighup(server, "policy_applied")
    fixed = server.http.get("/readyz", headers=ADMIN).json()
    assert (fixed["status"], fixed["policy"]) == ("ready", hash_of(policy))
    assert fixed["policy_reload"]["result"] == "applied"
    assert fixed["policy_reload"]["problems"] == []
    assert reload_ok(server) == 1

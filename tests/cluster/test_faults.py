"""Load through HAProxy while replicas go away.

* SIGKILL one replica mid-load: clients see errors only for requests that were in flight on it
  (at most one per client, all started before the kill), HAProxy marks it DOWN, and once it is
  back (its journal recovered) every 200 the clients saw has exactly one ledger row.
* A rolling restart (each replica in turn: taken out of HAProxy, drained, SIGTERM, restarted,
  put back once healthy) under the same load: no request fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from tests.cluster.local import Cluster, Load, gone, refuses, report, until

CLIENTS = 8
VICTIM = 2


def by_replica(load: Load) -> dict[str, int]:
    return dict(Counter(str(e.replica) for e in load.ok))


async def test_sigkill_one_replica_under_load(healthy: Cluster) -> None:
    cluster = healthy
    load = Load(cluster.url, cluster.auth, clients=CLIENTS)
    load.start()
    try:
        await load.until(lambda: len(load.ok) >= 150, "150 answers before the kill")
        pid = cluster.pid(VICTIM)
        killed_at = time.monotonic()
        in_flight_at_kill = len(load.in_flight)
        os.kill(pid, signal.SIGKILL)
        port = int(cluster.env[f"R{VICTIM}_PORT"])
        await asyncio.to_thread(
            until, lambda: refuses(port), "the killed replica's port closed", 10
        )
        dead_at = time.monotonic()  # its sockets closed: what was sent to it is lost
        await asyncio.to_thread(until, lambda: gone(pid), "the killed replica gone", 10)
        await asyncio.to_thread(
            until, lambda: cluster.status(VICTIM).startswith("DOWN"), "HAProxy marking it DOWN", 10
        )
        down_after = time.monotonic() - killed_at
        before = len(load.ok)
        await load.until(lambda: len(load.ok) >= before + 150, "150 answers after the kill")
    finally:
        await load.stop()
    status_in_haproxy = cluster.status(VICTIM)

    # Back again: its journal holds the rows it had not written yet.
    await asyncio.to_thread(cluster.start, VICTIM)
    await asyncio.to_thread(cluster.wait_all_up)
    ids = [e.request_id for e in load.ok if e.request_id]
    assert len(ids) == len(load.ok), "a 200 without an x-request-id"
    counts: dict[str, int] = {}

    def all_rows() -> bool:
        nonlocal counts
        counts = cluster.row_counts(ids)
        return len(counts) == len(ids)

    try:
        await asyncio.to_thread(until, all_rows, "a ledger row for every 200", 60)
    finally:
        errors = load.failed
        report(
            "kill",
            {
                "clients": CLIENTS,
                "requests": len(load.exchanges),
                "ok": len(load.ok),
                "errors": len(errors),
                "error_kinds": dict(Counter(str(e.error or e.status) for e in errors)),
                "in_flight_at_kill": in_flight_at_kill,
                "error_details": [
                    f"{e.replica} {e.status} {e.error} stream={e.stream} "
                    f"started {e.started - killed_at:+.3f}s ended {e.ended - killed_at:+.3f}s"
                    for e in errors
                ],
                "seconds_until_process_gone": round(dead_at - killed_at, 3),
                "seconds_until_haproxy_down": round(down_after, 3),
                "haproxy_status_after": status_in_haproxy,
                "ok_by_replica": by_replica(load),
                "ok_with_a_row": len(counts),
                "ok_with_more_than_one_row": sum(1 for c in counts.values() if c > 1),
            },
        )
    assert status_in_haproxy.startswith("DOWN")
    # Only requests that were on the killed replica: sent to it before its process was gone
    # (between SIGKILL and the kernel closing its sockets, ~0.1 s, its listening socket still
    # accepts, and HAProxy may not send a request twice), failing when it went. A client has
    # at most one such request at a time; after that, refused connections are retried.
    assert len(errors) <= 2 * CLIENTS
    assert all(e.started <= dead_at and e.ended >= killed_at for e in errors), errors
    assert all(e.ended <= dead_at + 1.0 for e in errors), errors
    assert all(count == 1 for count in counts.values())


async def test_rolling_restart_under_load_fails_no_request(healthy: Cluster) -> None:
    cluster = healthy
    load = Load(cluster.url, cluster.auth, clients=CLIENTS)
    steps: list[dict[str, float]] = []
    load.start()
    try:
        await load.until(lambda: len(load.ok) >= 50, "50 answers before the restarts")
        for n in range(1, cluster.replicas + 1):
            steps.append(await asyncio.to_thread(restart_one, cluster, n))
            done = len(load.ok)
            await load.until(answered(load, done + 50), f"answers after r{n}")
    finally:
        await load.stop()
    report(
        "rolling-restart",
        {
            "clients": CLIENTS,
            "requests": len(load.exchanges),
            "ok": len(load.ok),
            "failed": len(load.failed),
            "failures": [f"{e.replica} {e.status} {e.error}" for e in load.failed][:20],
            "ok_by_replica": by_replica(load),
            "steps": steps,
        },
    )
    assert load.exchanges
    assert load.failed == []


def answered(load: Load, count: int) -> Callable[[], bool]:
    return lambda: len(load.ok) >= count


def restart_one(cluster: Cluster, n: int) -> dict[str, float]:
    """Take replica ``n`` out of HAProxy (maintenance: no new request goes to it), wait for its
    requests in progress to end, stop it with SIGTERM, start it again, put it back once its
    health check passes. Returns how long each phase took."""
    started = time.monotonic()
    server = f"tiergate/r{n}"
    assert cluster.haproxy(f"set server {server} state maint").strip() == ""
    drained = until(
        lambda: cluster.servers()[f"r{n}"]["scur"] == "0", f"r{n} drained in HAProxy", 30
    )
    old = cluster.pid(n)
    cluster.stop(n, "TERM")
    stopped = time.monotonic()
    cluster.start(n)
    assert cluster.pid(n) != old
    restarted = time.monotonic() - stopped
    assert cluster.haproxy(f"set server {server} state ready").strip() == ""
    back = until(lambda: cluster.status(n) == "UP", f"r{n} UP again", 30)
    return {
        "replica": n,
        "drain_s": round(drained, 3),
        "restart_s": round(restarted, 3),
        "until_up_s": round(back, 3),
        "total_s": round(time.monotonic() - started, 3),
    }

"""Scale figure for the local cluster: wrk through HAProxy with 1 replica in service and with 3,
in interleaved rounds; requests/s, the replicas' CPU per request (psutil over the replica
processes: user + system, all three counted in both modes), HAProxy's own CPU per request,
latency percentiles, non-2xx answers and socket errors, and the ledger's rows against the
requests wrk completed.

The cluster is ``deploy/local/cluster.sh``'s (three replicas, fake backends answering in 5 ms,
the ledger on, PostgreSQL and a private Redis): started here in a temporary directory, or the
running one named by ``TIERGATE_CLUSTER_ENV``. "1 replica" puts r2 and r3 in HAProxy's
maintenance state (they stay up, idle); "3 replicas" puts them back.

On a 2-core machine the three replicas share the same two cores as HAProxy, PostgreSQL and wrk,
so the point is CPU per request staying flat and nothing lost, not a speed-up.

Run: ``PYTHONPATH=. .venv/bin/python bench/cluster_scale.py [--rounds 3] [--duration 10]``
Needs wrk and haproxy on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.local import SCRIPT, Cluster  # noqa: E402

OUT = ROOT / "bench" / "results" / "cluster-scale.json"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


def wrk_script(directory: Path, key: str) -> Path:
    path = directory / "post.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f"wrk.body = '{json.dumps(BODY)}'\n"
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"cannot read a duration from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    out = subprocess.run(
        [*command, f"{url}/v1/chat/completions"], capture_output=True, text=True, check=True
    ).stdout
    percentiles = {
        f"p{p}_ms": _ms(value)
        for p, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    completed = re.search(r"(\d+) requests in", out)
    if rps is None or completed is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(rps.group(1)),
        "requests": int(completed.group(1)),
        **percentiles,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def set_replicas(cluster: Cluster, count: int) -> None:
    for n in range(1, cluster.replicas + 1):
        state = "ready" if n <= count else "maint"
        cluster.haproxy(f"set server tiergate/r{n} state {state}")
    deadline = time.monotonic() + 30
    while True:
        servers = cluster.servers()
        up = [name for name, row in servers.items() if row["status"] == "UP"]
        if len(up) == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy did not settle on {count} replicas: {servers}")
        time.sleep(0.05)


def ledger_rows(cluster: Cluster) -> int:
    with psycopg.connect(cluster.dsn()) as connection:
        row = connection.execute("SELECT count(*) FROM ledger_requests").fetchone()
    return int(row[0]) if row else 0


def settled_rows(cluster: Cluster, within_s: float = 30.0) -> int:
    """The ledger's row count once it has stopped growing for 2 s (the replicas flushed)."""
    deadline = time.monotonic() + within_s
    last, since = ledger_rows(cluster), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = ledger_rows(cluster)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 2.0:
            break
    return last


def measure(cluster: Cluster, rounds: int, duration: int, connections: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cluster-scale-"))
    script = wrk_script(work, cluster.env["API_KEY"])
    replica_pids = [cluster.pid(n) for n in range(1, cluster.replicas + 1)]
    haproxy_pid = int(cluster.env["HAPROXY_PID"])
    runs: list[dict[str, Any]] = []
    rows_before = settled_rows(cluster)
    for count in (1, 3):  # warm-up, each mode
        set_replicas(cluster, count)
        run_wrk(cluster.url, script, connections, 2)
    rows_before = settled_rows(cluster)
    completed = 0
    for round_ in range(rounds):
        for count in (1, 3) if round_ % 2 == 0 else (3, 1):
            set_replicas(cluster, count)
            cpu0, hap0 = cpu_seconds(replica_pids), cpu_seconds([haproxy_pid])
            result = run_wrk(cluster.url, script, connections, duration)
            cpu1, hap1 = cpu_seconds(replica_pids), cpu_seconds([haproxy_pid])
            completed += result["requests"]
            result |= {
                "replicas": count,
                "round": round_,
                "replica_cpu_ms_per_request": 1000 * (cpu1 - cpu0) / result["requests"],
                "haproxy_cpu_ms_per_request": 1000 * (hap1 - hap0) / result["requests"],
            }
            runs.append(result)
            print(json.dumps(result), flush=True)
    set_replicas(cluster, cluster.replicas)
    rows = settled_rows(cluster) - rows_before
    summary = {}
    for count in (1, 3):
        mine = [r for r in runs if r["replicas"] == count]
        summary[f"{count}_replica{'s' if count > 1 else ''}"] = {
            "rps_median": statistics.median(r["rps"] for r in mine),
            "replica_cpu_ms_per_request_median": statistics.median(
                r["replica_cpu_ms_per_request"] for r in mine
            ),
            "haproxy_cpu_ms_per_request_median": statistics.median(
                r["haproxy_cpu_ms_per_request"] for r in mine
            ),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in mine),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in mine),
            "non_2xx": sum(r["non_2xx"] for r in mine),
            "socket_errors": [r["socket_errors"] for r in mine if r["socket_errors"]],
        }
    return {
        "what": "wrk -t1 through HAProxy (roundrobin) to 1 or 3 tiergate replicas, ledger on "
        "(PostgreSQL), fake backends answering in 5 ms",
        "machine": f"{os.cpu_count()} CPUs, shared by wrk, HAProxy, PostgreSQL, Redis and the "
        "replicas",
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "summary": summary,
        "ledger": {
            "requests_completed_by_wrk": completed,
            "rows_written": rows,
            "note": "wrk cuts off the requests in flight when a run ends; the gateway records "
            "those too, so rows may exceed completed requests by up to the connections per run",
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    named = os.environ.get("TIERGATE_CLUSTER_ENV")
    state = Path(named).resolve().parent if named else Path(tempfile.mkdtemp()) / "cluster"
    env = {**os.environ, "TIERGATE_CLUSTER_DIR": str(state)}
    if not named:
        subprocess.run([str(SCRIPT), "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        result = measure(Cluster(state), args.rounds, args.duration, args.connections)
    finally:
        if not named:
            subprocess.run([str(SCRIPT), "down"], env=env, check=False)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(json.dumps(result["ledger"], indent=2))


if __name__ == "__main__":
    main()

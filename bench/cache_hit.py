"""Cache-hit benchmark: a request answered from the exact response cache, end to end through
``tiergate serve`` (target: p50 <= 2 ms at one connection).

One ``tiergate serve`` process (one worker) with a fake backend behind it, for each of four
set-ups: the in-process store or Redis (a temporary database index on the local Redis,
127.0.0.1:6379, emptied before each gateway and afterwards), each with the ledger off and on
(the embedded SQLite, a fresh file). One deterministic request (temperature 0) is sent until
the gateway answers it from the cache (``x-tiergate-cache: hit``); then wrk (one thread, one
connection) repeats it for ``--duration`` seconds. wrk's Lua script counts every answer that is
not a hit, so the figures are known to be hits only; with the ledger on, the ledger's hit rows
are counted against the hits wrk completed. For context each gateway also serves the same
request sampled (temperature 0.5: not cacheable, answered by the fake backend through the whole
routing path), and ``GET /healthz`` gives the HTTP floor of the server.

The machine may be busy with other work: the load average is recorded before each run.

Run:  python bench/cache_hit.py [--duration 10] [--redis-db 14]
        [--out bench/results/cache-hit.json]
Needs wrk on PATH (Debian: apt-get install wrk) and, for the Redis runs, a Redis on
127.0.0.1:6379 (Debian: apt-get install redis-server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
TARGET_P50_MS = 2.0
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

POLICY = """
version: 1
backends:
  local: {type: fake, model: fake-model, script: [{reply: "The capital of France is Paris."}]}
tiers:
  - {name: local, backends: [local]}
"""

BODY: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "max_tokens": 64,
    "temperature": 0,
}

# Counts the answers that were not cache hits (per wrk thread, summed at the end).
LUA_CHECK = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not_hits = 0 end
function response(status, headers, body)
  if status ~= 200 or headers["x-tiergate-cache"] ~= "hit" then not_hits = not_hits + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("not_hits") end
  io.write(string.format("not-hits: %d\\n", total))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_script(directory: Path, name: str, body: dict[str, Any], check_hits: bool) -> Path:
    text = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path = directory / f"{name}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{text}'\n" + (LUA_CHECK if check_hits else "")
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"cannot read a duration from {text!r}")
    return round(float(match.group(1)) * _UNITS[match.group(2)], 3)


def run_wrk(url: str, script: Path | None, duration: int, connections: int = 1) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    load = os.getloadavg()
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    percentiles = {
        f"p{p}_ms": _ms(value)
        for p, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    completed = re.search(r"(\d+) requests in", out)
    if rps is None or completed is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    not_hits = re.search(r"not-hits: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "connections": connections,
        "rps": float(rps.group(1)),
        "requests": int(completed.group(1)),
        **percentiles,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        **({"not_hits": int(not_hits.group(1))} if not_hits else {}),
        "socket_errors": socket_errors.group(1) if socket_errors else None,
        "load_before": [round(x, 2) for x in load],
    }


class Gateway:
    """``tiergate serve`` (one worker) over the fake backend, with the given store and ledger."""

    def __init__(
        self, tiergate: str, work: Path, *, store: str, ledger: bool, redis_url: str | None
    ) -> None:
        self.name = f"{store}/ledger-{'on' if ledger else 'off'}"
        slug = self.name.replace("/", "-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ledger = ledger
        self.database = work / f"ledger-{slug}.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
        env.update(
            TIERGATE_POLICY=str(work / "policy.yaml"),
            TIERGATE_PORT=str(self.port),
            TIERGATE_HOST="127.0.0.1",
            TIERGATE_WATCH_POLICY="false",
            TIERGATE_WORKERS="1",
            TIERGATE_LEDGER="true" if ledger else "false",
            TIERGATE_DATABASE_URL=f"sqlite:///{self.database}",
            TIERGATE_OUTBOX_PATH=str(work / f"outbox-{slug}.db"),
        )
        if store == "redis":
            assert redis_url is not None
            env["TIERGATE_REDIS_URL"] = redis_url
        self._log = (work / f"gateway-{slug}.log").open("wb")  # the default info log
        self.process = subprocess.Popen(
            [tiergate, "serve"], env=env, stdout=self._log, stderr=self._log
        )

    def wait_ready(self, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.name}: tiergate serve exited ({code})")
            try:
                httpx.get(f"{self.base}/healthz", timeout=1.0)
                return
            except httpx.TransportError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
        raise RuntimeError(f"{self.name}: not answering after {limit_s} s")

    def prime(self, limit_s: float = 10.0) -> dict[str, Any]:
        """Send the request until it comes from the cache (its write is in the background)."""
        url = f"{self.base}/v1/chat/completions"
        first = httpx.post(url, json=BODY, timeout=10)
        first.raise_for_status()
        if first.headers.get("x-tiergate-cache") != "miss":
            raise RuntimeError(f"{self.name}: the store was not empty: {dict(first.headers)}")
        misses = 1
        deadline = time.monotonic() + limit_s
        while True:
            again = httpx.post(url, json=BODY, timeout=10)
            again.raise_for_status()
            if again.headers.get("x-tiergate-cache") == "hit":
                break
            misses += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: never a cache hit: {dict(again.headers)}")
        if again.json()["choices"][0]["message"] != first.json()["choices"][0]["message"]:
            raise RuntimeError(f"{self.name}: the hit differs from the answer it replays")
        ready = httpx.get(f"{self.base}/readyz", timeout=5).json()
        return {
            "hits": 1,
            "misses": misses,
            "first": first.headers.get("x-tiergate-cache"),
            "backend_of_hit": again.headers.get("x-tiergate-backend"),
            "store": ready["cache"],
        }

    def stop(self) -> int | None:
        """Stop (the ledger drains on SIGTERM); with the ledger on, its cache-hit rows."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        if not self.ledger:
            return None
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM ledger_requests WHERE cache = 'hit'"
            ).fetchone()
        return int(count)


@contextlib.contextmanager
def running(gateway: Gateway) -> Iterator[Gateway]:
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.stop()


@contextlib.contextmanager
def temporary_redis_db(db: int) -> Iterator[redis.Redis]:
    """``db`` on the local Redis, refused unless empty; flushed afterwards."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=2)
    try:
        try:
            size = int(client.dbsize())
        except (redis.RedisError, OSError) as exc:
            raise SystemExit(
                f"no Redis on {REDIS_HOST}:{REDIS_PORT} ({exc}): start one (Debian: apt-get "
                f"install redis-server), or run with --no-redis"
            ) from None
        if size:
            raise SystemExit(f"Redis database {db} holds {size} keys: pick an empty --redis-db")
        yield client
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            client.flushdb()
        client.close()


def bench_one(
    tiergate: str,
    work: Path,
    duration: int,
    *,
    store: str,
    ledger: bool,
    redis_url: str | None,
) -> dict[str, Any]:
    hit_script = post_script(work, "hit", BODY, check_hits=True)
    sampled = post_script(work, "sampled", {**BODY, "temperature": 0.5}, check_hits=False)
    gateway = Gateway(tiergate, work, store=store, ledger=ledger, redis_url=redis_url)
    with running(gateway):
        primed = gateway.prime()
        url = f"{gateway.base}/v1/chat/completions"
        warm_up = run_wrk(url, hit_script, 2)
        hit = run_wrk(url, hit_script, duration)
        print(f"{gateway.name} hit", json.dumps(hit), flush=True)
        run_wrk(url, sampled, 2)
        uncached = run_wrk(url, sampled, duration)
        print(f"{gateway.name} uncached", json.dumps(uncached), flush=True)
    result: dict[str, Any] = {"primed": primed, "hit": hit, "uncached": uncached}
    hit_rows = gateway.stop()
    if hit_rows is not None:
        # wrk cuts requests off when a run ends; the gateway books those too: rows >= hits.
        result["ledger_hit_rows"] = hit_rows
        result["hits_completed"] = primed["hits"] + warm_up["requests"] + hit["requests"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--redis-db", type=int, default=14, help="an empty index on local Redis")
    parser.add_argument("--no-redis", action="store_true", help="the in-process store only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cache-hit.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH: install it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    tiergate = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    if tiergate is None:
        print("tiergate is not installed in this environment (make install)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tiergate-bench-cache-"))
    (work / "policy.yaml").write_text(POLICY)
    load_start = os.getloadavg()
    runs: dict[str, Any] = {}

    floor = Gateway(tiergate, work, store="memory", ledger=False, redis_url=None)
    with running(floor):
        run_wrk(f"{floor.base}/healthz", None, 2)
        runs["healthz"] = run_wrk(f"{floor.base}/healthz", None, args.duration)
        print("healthz", json.dumps(runs["healthz"]), flush=True)

    for ledger in (False, True):
        runs[f"memory/ledger-{'on' if ledger else 'off'}"] = bench_one(
            tiergate, work, args.duration, store="memory", ledger=ledger, redis_url=None
        )
    if not args.no_redis:
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{args.redis_db}"
        with temporary_redis_db(args.redis_db) as client:
            for ledger in (False, True):
                client.flushdb()  # each gateway starts with an empty cache
                runs[f"redis/ledger-{'on' if ledger else 'off'}"] = bench_one(
                    tiergate, work, args.duration, store="redis", ledger=ledger, redis_url=url
                )

    summary: dict[str, Any] = {}
    verdict: dict[str, bool] = {}
    for name, run in runs.items():
        if name == "healthz":
            continue
        hit, uncached = run["hit"], run["uncached"]
        summary[name] = {
            "hit_p50_ms": hit["p50_ms"],
            "hit_p99_ms": hit["p99_ms"],
            "hit_rps": hit["rps"],
            "hit_requests": hit["requests"],
            "not_hits": hit["not_hits"],
            "uncached_p50_ms": uncached["p50_ms"],
            "uncached_p99_ms": uncached["p99_ms"],
            "uncached_rps": uncached["rps"],
        }
        if "ledger_hit_rows" in run:
            summary[name]["ledger_hit_rows"] = run["ledger_hit_rows"]
            verdict[f"{name}.every_hit_booked"] = run["ledger_hit_rows"] >= run["hits_completed"]
        verdict[f"{name}.hit_p50_ms"] = hit["p50_ms"] <= TARGET_P50_MS
        verdict[f"{name}.only_hits"] = hit["not_hits"] == 0 and hit["non_2xx"] == 0
    report = {
        "benchmark": "cache hit end to end through tiergate serve (wrk, 1 connection)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_start": [round(x, 2) for x in load_start],
            "load_end": [round(x, 2) for x in os.getloadavg()],
        },
        "duration_s": args.duration,
        "request": BODY,
        "targets": {"hit_p50_ms": TARGET_P50_MS},
        "healthz_floor": {k: runs["healthz"][k] for k in ("p50_ms", "p99_ms", "rps")},
        "summary": summary,
        "meets_targets": verdict,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": summary, "meets_targets": verdict}, indent=2))
    print(f"written to {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

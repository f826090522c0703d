"""Shadow-mode benchmark: does mirroring requests to a canary candidate slow the client down?

One ``tiergate serve`` process (one worker, the ledger on: a fresh SQLite file) per run, with
fake backends: the stable backend answers after ``--stable-ms`` (20 ms), the candidate after
``--candidate-ms`` (200 ms, ten times slower: the case where a shadow call could hurt). The
same policy is run without a canary ("off") and with ``canary: {mode: shadow, percent: 100}``
("on": every request is mirrored, as many as ``shadow.concurrency`` + ``shadow.queue`` at once,
the rest dropped). A client sends ``--requests`` requests at ``--concurrency`` connections; the
runs alternate off/on ``--rounds`` times so a busy machine affects both alike. Reported: client
latency p50/p95/mean per mode (all rounds pooled), requests/s, and from /metrics the shadow calls
compared and dropped.

Run:  python bench/canary_shadow.py [--requests 400] [--concurrency 4] [--rounds 3]
        [--out bench/results/canary-shadow.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
version: 1
backends:
  stable: {{type: fake, model: stable-model, script: [{{reply: "{reply}", delay_ms: {stable}}}]}}
  cand: {{type: fake, model: cand-model, script: [{{reply: "{reply}", delay_ms: {candidate}}}]}}
tiers:
  - {{name: local, backends: [stable]}}
"""
CANARY = """
canary:
  name: bench
  candidate: cand
  tier: local
  mode: shadow
  percent: 100
  shadow: {concurrency: 4, queue: 32}
  evaluate_every_s: 3600
"""
REPLY = "The capital of France is Paris, on the Seine."
BODY = {
    "model": "auto",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


async def _load(base: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=BODY)
            latencies.append((time.perf_counter() - started) * 1000.0)
            if (
                response.status_code != 200
                or response.json()["choices"][0]["message"]["content"] != REPLY
            ):
                raise RuntimeError(f"unexpected answer: {response.status_code} {response.text}")

    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        for _ in range(20):  # warm-up
            await client.post("/v1/chat/completions", json=BODY)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, requests / elapsed


def _shadow_counts(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tiergate_canary_shadow_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(value)
    return counts


def _run(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    policy = workdir / f"{mode}.yaml"
    text = POLICY.format(reply=REPLY, stable=args.stable_ms, candidate=args.candidate_ms)
    policy.write_text(text + (CANARY if mode == "on" else ""))
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    db = workdir / f"{mode}-{port}.db"
    env.update(
        TIERGATE_POLICY=str(policy),
        TIERGATE_PORT=str(port),
        TIERGATE_WATCH_POLICY="false",
        TIERGATE_LOG_LEVEL="warning",
        TIERGATE_DATABASE_URL=f"sqlite:///{db}",
        TIERGATE_OUTBOX_PATH=str(workdir / f"outbox-{port}.db"),
    )
    server = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli.main import main; main()", "serve"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.2)
        latencies, rps = asyncio.run(_load(base, args.requests, args.concurrency))
        counts = _shadow_counts(base)
    finally:
        server.terminate()
        server.wait(30)
    return {"mode": mode, "latencies": latencies, "rps": rps, "shadow": counts}


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(latencies, 50), 3),
        "p95_ms": round(_percentile(latencies, 95), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stable-ms", type=float, default=20.0)
    parser.add_argument("--candidate-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/canary-shadow.json")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode in ("off", "on"):
                run = _run(mode, args, Path(tmp))
                runs.append(run)
                print(f"round {round_ + 1} {mode}: {_summary(run['latencies'])} {run['shadow']}")
    result: dict[str, Any] = {
        "benchmark": "canary-shadow",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "setup": {
            "requests_per_run": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "stable_delay_ms": args.stable_ms,
            "candidate_delay_ms": args.candidate_ms,
            "shadow": {"percent": 100, "concurrency": 4, "queue": 32},
        },
        "modes": {},
    }
    for mode in ("off", "on"):
        mine = [r for r in runs if r["mode"] == mode]
        pooled = [value for r in mine for value in r["latencies"]]
        shadow: dict[str, float] = {}
        for r in mine:
            for key, value in r["shadow"].items():
                shadow[key] = shadow.get(key, 0.0) + value
        result["modes"][mode] = {
            **_summary(pooled),
            "requests_per_s": round(statistics.fmean(r["rps"] for r in mine), 1),
            "per_round_p50_ms": [_summary(r["latencies"])["p50_ms"] for r in mine],
            "shadow_calls": shadow,
        }
    off, on = result["modes"]["off"], result["modes"]["on"]
    result["delta"] = {
        "p50_ms": round(on["p50_ms"] - off["p50_ms"], 3),
        "p95_ms": round(on["p95_ms"] - off["p95_ms"], 3),
        "mean_ms": round(on["mean_ms"] - off["mean_ms"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                "modes": {m: dict(d.items()) for m, d in result["modes"].items()},
                "delta": result["delta"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

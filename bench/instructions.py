"""Instructions per request, two checkouts compared: a measure of gateway CPU that does not
depend on what else the machine is doing.

Each checkout's gateway runs under ``valgrind --tool=callgrind`` (instrumentation off at start),
in front of the same mock upstream as ``gateway_overhead.py``, with the same policy and launcher
(only ``PYTHONPATH`` differs). After a warm-up, instrumentation is switched on for ``--requests``
sequential requests (one client, keep-alive) and off again; callgrind's instruction count over
that window, divided by the requests, is the figure. The client and the mock run outside
valgrind, so only the gateway's own work is counted. Repeated runs of one checkout agree to
within a few tenths of a percent, where wall-clock CPU time on this shared host spreads by 10%
or more between runs.

Run:  python bench/instructions.py --against DIR [--requests 300] [--repeat 2]
        [--out bench/results/instructions.json]
      python bench/instructions.py --tracing [--against DIR] ...
        tracing on (every request sampled, batch exporter, OTLP/HTTP to the mock as collector,
        as ``gateway_overhead.py --tracing``): without --against, this checkout with tracing
        off against the same with it on; with --against, both traced. The export thread's
        instructions are counted with the rest (callgrind counts every thread), for the batches
        it sends inside the window.
Needs valgrind (Debian: apt-get install valgrind). About 20 s per run of 300 requests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as overhead  # the sibling benchmark: its launcher, policy and mock

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 100


def count(
    tree: Path, work: Path, stream: bool, requests: int, extra: dict[str, str] | None = None
) -> int:
    """Instructions the gateway of ``tree`` executed while answering ``requests`` requests;
    ``extra``: more environment variables for it."""
    port = overhead.free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "TIERGATE_POLICY": str(work / "policy.yaml"),
        "TIERGATE_PORT": str(port),
        "TIERGATE_HOST": "127.0.0.1",
        "TIERGATE_WATCH_POLICY": "false",
        "TIERGATE_LEDGER": "false",
        **(extra or {}),
    }
    env.pop("TIERGATE_API_KEYS", None)
    out = work / f"callgrind-{os.getpid()}-{port}.out"
    log = work / f"valgrind-{port}.log"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        overhead.LAUNCH,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=tree, stdout=sink, stderr=sink)
    try:
        overhead.wait_http(f"http://127.0.0.1:{port}/healthz", process, limit_s=600)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = dict(overhead.BODY, stream=stream)
        with httpx.Client(timeout=60) as client:
            for _ in range(WARMUP):
                client.post(url, json=body).raise_for_status()
            _control(process.pid, "on")
            for _ in range(requests):
                answer = client.post(url, json=body)
                answer.raise_for_status()
                if answer.headers.get("x-tiergate-backend") != "upstream":
                    raise RuntimeError(f"unexpected routing: {dict(answer.headers)}")
            _control(process.pid, "off")
    finally:
        process.terminate()
        process.wait(timeout=120)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise RuntimeError(f"callgrind reported no count; see {log}")
    return int(found.group(1))


def _control(pid: int, state: str) -> None:
    subprocess.run(
        ["callgrind_control", "-i", state, str(pid)], check=True, stdout=subprocess.DEVNULL
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="the other checkout")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="trace every request (OTLP to the mock); without --against: off vs on here",
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/instructions.json")
    args = parser.parse_args()
    if args.against is None and not args.tracing:
        parser.error("--against DIR is needed (or --tracing)")
    work = Path(tempfile.mkdtemp(prefix="tiergate-instr-"))
    mock_port = overhead.free_port()
    (work / "policy.yaml").write_text(overhead.POLICY.format(port=mock_port))
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{mock_port}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }
    envs: dict[str, dict[str, str]] = {}
    if args.against is None:  # --tracing alone: this checkout, off and on
        trees = {"against": ROOT, "this": ROOT}
        envs = {"this": traced}
    else:
        trees = {"against": args.against.resolve(), "this": ROOT}
        envs = {"against": traced, "this": traced} if args.tracing else {}
    loads: dict[str, Any] = {}
    try:
        overhead.wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock)
        for load, stream in (("json", False), ("stream", True)):
            runs: dict[str, list[float]] = {label: [] for label in trees}
            for _ in range(args.repeat):
                for label, tree in trees.items():
                    total = count(tree, work, stream, args.requests, envs.get(label))
                    runs[label].append(total / args.requests)
                    print(f"{load} {label}: {total / args.requests:,.0f} instructions/request")
            before = statistics.median(runs["against"])
            after = statistics.median(runs["this"])
            loads[load] = {
                "instructions_per_request": runs,
                "median_against": before,
                "median_this": after,
                "ratio": after / before,
            }
    finally:
        mock.terminate()
        mock.wait(timeout=30)
    result = {
        "benchmark": "gateway instructions per request under callgrind, two checkouts",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "trees": {
            label: {"commit": overhead._commit(tree), "traced": label in envs}
            for label, tree in trees.items()
        },
        "requests": args.requests,
        "loads": loads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for load, row in loads.items():
        print(f"{load}: ratio this/against {row['ratio']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

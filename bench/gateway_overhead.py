"""Gateway overhead benchmark: tiergate in front of a minimal OpenAI-compatible mock upstream,
against the mock alone, non-streaming and streaming, at concurrency 1 and 32, with the full
routing path on (auth off, scoring, policy, metrics, breaker, an openai_compat backend through
the openai SDK). Load comes from wrk (C, one thread) in a separate process.

Also times the complexity scorer on a 1,000-token prompt.

The ledger: the main runs have it off (``TIERGATE_LEDGER=false``), so the figures are the routing
path's own; ``--ledger compare`` (the default) then runs the concurrency-32 loads again with it on
(the embedded SQLite, a fresh file in the temporary directory) and reports the requests/s lost
(target: at most 10%) and the ledger's row count against the requests wrk completed.

Run:  python bench/gateway_overhead.py [--duration 10] [--ledger compare|off|on]
        [--out bench/results/gateway-overhead.json]
      python bench/gateway_overhead.py --against DIR [--rounds 5] [--ledger on] [--out FILE]
        [--stream-pieces N]
        this checkout against another one (say `git worktree add DIR <older commit>`) in one
        run: both gateways up at once, their wrk runs interleaved, the same launcher for both
        (uvicorn as `tiergate serve` configures it, only PYTHONPATH differs); reports added p50
        at c=1, requests/s at c=32 and gateway CPU seconds per request, per tree.
      --stream-pieces N: the mock's streamed answers have N content chunks (default 5), for
        what the gateway spends per chunk.
Needs wrk on PATH (Debian: apt-get install wrk).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "p50_added_ms_c1": 1.5,
    "p99_added_ms_c1": 5.0,
    "rps_c32": 1000.0,
    "scorer_p50_us": 100.0,
}
LEDGER_MAX_LOSS_PCT = 10.0

BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": "Summarise the plot of a short story about a lighthouse keeper who finds "
            "a message in a bottle, in two sentences.",
        },
    ],
    "max_tokens": 64,
    "temperature": 0.2,
}

POLICY = """
version: 1
backends:
  upstream: {{type: openai_compat, model: mock-model, base_url: "http://127.0.0.1:{port}/v1"}}
  spare: {{type: openai_compat, model: mock-model, base_url: "http://127.0.0.1:{port}/v1"}}
tiers:
  - {{name: local, max_score: 0.5, backends: [upstream]}}
  - {{name: remote, backends: [spare]}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)
    raise RuntimeError(f"{url} not answering after {limit_s} s")


def wrk_script(directory: Path, stream: bool) -> Path:
    body = json.dumps({**BODY, "stream": stream}).replace("'", "\\'")
    path = directory / f"post-{'stream' if stream else 'json'}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{body}'\n"
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"cannot read a duration from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = {
        f"p{p}_ms": _ms(value)
        for p, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    completed = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "connections": connections,
        "rps": rps,
        "requests": completed,
        **percentiles,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def scorer_timing(samples: int = 3000) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from adapters.base import Message
    from gateway.scoring.heuristic import ScorerWeights, score
    from gateway.scoring.tokens import count_exact, warm_up

    warm_up()
    # Mixed content, so every feature's scan runs: numbers and arithmetic, code, cue words.
    sentence = (
        "Please review the attached quarterly report: revenue fell 12% to 4.5M (3*1.5=4.5) in "
        "the northern region. Explain why, then fix `def total(xs): return sum(xs)` and "
        "propose three concrete steps. "
    )
    text = sentence * 60
    while count_exact(text) > 1000:
        text = text[:-20]
    messages = [Message(role="user", content=text)]
    weights = ScorerWeights()
    for _ in range(200):
        score(messages, 256, weights)
    times = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        score(messages, 256, weights)
        times.append((time.perf_counter_ns() - started) / 1000)
    times.sort()
    return {
        "prompt_tokens": count_exact(text),
        "p50_us": statistics.median(times),
        "p99_us": times[int(len(times) * 0.99)],
    }


def ledger_rows(url: str) -> int:
    with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as db:
        (count,) = db.execute("SELECT count(*) FROM ledger_requests").fetchone()
    return int(count)


class Gateway:
    """``tiergate serve --workers N`` in front of the mock, the ledger off
    (``TIERGATE_LEDGER=false``) or on (a fresh SQLite file in ``work``)."""

    def __init__(self, tiergate: str, work: Path, workers: int, *, ledger: bool) -> None:
        self.port = free_port()
        self.ledger = ledger
        self.suffix = f"w{workers}" + ("-ledger" if ledger else "")
        self.database = f"sqlite:///{work / f'ledger-{self.suffix}.db'}"
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self.completed = 0  # requests wrk (and the routing check) completed
        outbox = work / f"outbox-{self.suffix}.db"
        env = {
            **os.environ,
            "TIERGATE_POLICY": str(work / "policy.yaml"),
            "TIERGATE_PORT": str(self.port),
            "TIERGATE_HOST": "127.0.0.1",
            "TIERGATE_WATCH_POLICY": "false",
            "TIERGATE_WORKERS": str(workers),
            "TIERGATE_LEDGER": "true" if ledger else "false",
            "TIERGATE_DATABASE_URL": self.database,
            "TIERGATE_OUTBOX_PATH": str(outbox),
        }
        env.pop("TIERGATE_API_KEYS", None)
        for stale in (Path(self.database.split("///", 1)[1]), outbox):
            for extra in ("", "-wal", "-shm"):
                Path(f"{stale}{extra}").unlink(missing_ok=True)
        # the default info log, one line a request
        self._log = (work / f"gateway-{self.suffix}.log").open("wb")
        self.process = subprocess.Popen(
            [tiergate, "serve"], env=env, stdout=self._log, stderr=self._log
        )

    def ready(self) -> None:
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.process)
        check = httpx.post(self.url, json=BODY, timeout=10)
        check.raise_for_status()
        self.completed += 1
        if check.headers.get("x-tiergate-backend") != "upstream":
            raise RuntimeError(f"unexpected routing: {dict(check.headers)}")

    def wrk(self, script: Path, connections: int, duration: int) -> dict[str, Any]:
        result = run_wrk(self.url, script, connections, duration)
        self.completed += result["requests"]
        return result

    def close(self) -> None:
        self._log.close()

    def stop(self) -> dict[str, Any] | None:
        """Stop (the ledger drains on SIGTERM); with the ledger on, its row count."""
        self.process.terminate()
        self.process.wait(timeout=60)
        self.close()
        if not self.ledger:
            return None
        # wrk cuts requests off when a run ends; the gateway records those too (abandoned).
        return {"requests_completed": self.completed, "ledger_rows": ledger_rows(self.database)}


@contextlib.contextmanager
def gateways(tiergate: str, work: Path, workers: int, *ledger: bool) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    try:
        for on in ledger:
            started.append(Gateway(tiergate, work, workers, ledger=on))
        for gateway in started:
            gateway.ready()
        yield started
    finally:
        for gateway in started:
            if gateway.process.returncode is None:  # stop() was not reached
                gateway.process.kill()
                gateway.process.wait()
                gateway.close()


def bench_gateway(
    tiergate: str, work: Path, workers: int, duration: int, *, ledger: bool
) -> dict[str, Any]:
    """Every load (JSON and stream, c=1 and c=32) on one gateway."""
    results: dict[str, Any] = {}
    with gateways(tiergate, work, workers, ledger) as (gateway,):
        for mode in ("json", "stream"):
            script = wrk_script(work, stream=mode == "stream")
            for c in (1, 32):
                gateway.wrk(script, c, 2)  # warm-up
                key = f"{mode}/c{c}/gateway-{gateway.suffix}"
                results[key] = gateway.wrk(script, c, duration)
                print(key, json.dumps(results[key]), flush=True)
        counts = gateway.stop()
    if counts is not None:
        results[f"ledger/gateway-{gateway.suffix}"] = counts
    return results


def compare_ledger(
    tiergate: str, work: Path, workers: int, duration: int, rounds: int
) -> dict[str, Any]:
    """The ledger off and on, at c=32: two gateways up at once and their wrk runs interleaved
    (off, on, on, off, ...), so a change in the machine's background load hits both alike."""
    results: dict[str, Any] = {}
    with gateways(tiergate, work, workers, False, True) as pair:
        for mode in ("json", "stream"):
            script = wrk_script(work, stream=mode == "stream")
            for gateway in pair:
                gateway.wrk(script, 32, 2)  # warm-up
            rps: dict[bool, list[float]] = {False: [], True: []}
            for turn in range(rounds):
                for gateway in pair if turn % 2 == 0 else pair[::-1]:
                    run = gateway.wrk(script, 32, duration)
                    rps[gateway.ledger].append(run["rps"])
                    print(f"{mode}/c32/compare-{gateway.suffix}", json.dumps(run), flush=True)
            off, on = statistics.median(rps[False]), statistics.median(rps[True])
            results[f"workers={workers}/{mode}"] = {
                "rps_c32_ledger_off": round(off, 2),
                "rps_c32_ledger_on": round(on, 2),
                "loss_pct": round((off - on) / off * 100, 2),
                "rounds": rounds,
                "rps_off_each": rps[False],
                "rps_on_each": rps[True],
            }
        for gateway in pair:
            counts = gateway.stop()
            if counts is not None:
                results[f"workers={workers}/ledger_rows"] = counts
                print(f"ledger rows w{workers}", json.dumps(counts), flush=True)
    return results


# An older checkout (--against) has uvicorn_config in gateway.workers, where it was before
# gateway.server.
LAUNCH = (
    "import uvicorn; from gateway.app import create_app; from gateway.settings import Settings\n"
    "try:\n    from gateway.server import uvicorn_config\n"
    "except ImportError:\n    from gateway.workers import uvicorn_config\n"
    "s = Settings(); uvicorn.Server(uvicorn_config(create_app(s), s)).run()"
)


class TreeGateway:
    """One checkout's gateway (ledger off, one process), started with PYTHONPATH=``tree``."""

    def __init__(
        self, tree: Path, work: Path, label: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.label = label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "TIERGATE_POLICY": str(work / "policy.yaml"),
            "TIERGATE_PORT": str(self.port),
            "TIERGATE_HOST": "127.0.0.1",
            "TIERGATE_WATCH_POLICY": "false",
            "TIERGATE_LEDGER": "false",
        }
        env.pop("TIERGATE_API_KEYS", None)  # the caller's own keys; ``extra_env`` may set some
        env.update(extra_env or {})
        self._log = (work / f"gateway-{label}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH], env=env, cwd=tree, stdout=self._log, stderr=self._log
        )

    def ready(self) -> None:
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.process)
        check = httpx.post(self.url, json=BODY, timeout=10)
        check.raise_for_status()
        if check.headers.get("x-tiergate-backend") != "upstream":
            raise RuntimeError(f"unexpected routing: {dict(check.headers)}")

    def cpu_s(self) -> dict[int, float]:
        """CPU seconds so far of the gateway and of each process it started (tracing's
        exporter process), by pid."""
        import psutil

        gateway = psutil.Process(self.process.pid)
        spent = {}
        for process in (gateway, *gateway.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                spent[process.pid] = float(times.user + times.system)
        return spent

    def wrk(self, script: Path, connections: int, duration: int) -> dict[str, Any]:
        before = self.cpu_s()
        result = run_wrk(self.url, script, connections, duration)
        after = self.cpu_s()
        requests = max(1, result["requests"])
        # The gateway's own CPU and its children's (tracing's exporter process) together.
        children = sum(
            spent - before.get(pid, 0.0) for pid, spent in after.items() if pid != self.process.pid
        )
        own = after[self.process.pid] - before[self.process.pid]
        result["cpu_ms_per_request"] = (own + children) * 1000 / requests
        result["children_cpu_ms_per_request"] = children * 1000 / requests
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._log.close()


def compare_trees(
    work: Path,
    mock_url: str,
    trees: dict[str, Path],
    duration: int,
    rounds: int,
    envs: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Both gateways up at once; per load, their runs alternate (a, b, b, a, ...) so a change
    in the machine's background load hits both alike; the mock alone is run between them.
    ``envs`` adds settings per label (the same tree twice, configured two ways)."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = [
        TreeGateway(tree, work, label, (envs or {}).get(label)) for label, tree in trees.items()
    ]
    try:
        for gateway in started:
            gateway.ready()
        for mode in ("json", "stream"):
            script = wrk_script(work, stream=mode == "stream")
            for c in (1, 32):
                load = f"{mode}/c{c}"
                for gateway in started:
                    gateway.wrk(script, c, 2)  # warm-up
                for turn in range(rounds):
                    order = started if turn % 2 == 0 else started[::-1]
                    for gateway in order:
                        run = gateway.wrk(script, c, duration)
                        runs.setdefault(load, {}).setdefault(gateway.label, []).append(run)
                        print(f"{load}/{gateway.label}", json.dumps(run), flush=True)
                    mock = run_wrk(mock_url, script, c, duration)
                    runs[load].setdefault("mock", []).append(mock)
    finally:
        for gateway in started:
            gateway.stop()
    summary: dict[str, Any] = {}
    for load, by_label in runs.items():
        mock_p50 = statistics.median(r["p50_ms"] for r in by_label["mock"])
        figures = {}
        for label in trees:
            each = by_label[label]
            figures[label] = {
                "p50_added_ms": round(statistics.median(r["p50_ms"] for r in each) - mock_p50, 3),
                "rps": round(statistics.median(r["rps"] for r in each), 1),
                "cpu_ms_per_request": round(
                    statistics.median(r["cpu_ms_per_request"] for r in each), 4
                ),
                # of which the gateway's child processes (tracing's exporter process)
                "children_cpu_ms_per_request": round(
                    statistics.median(r.get("children_cpu_ms_per_request", 0.0) for r in each), 4
                ),
            }
        first, second = (figures[label] for label in trees)
        figures["change_pct"] = {
            key: round((second[key] - first[key]) / first[key] * 100, 2)
            for key in first
            if first[key]
        }
        # Each round's two runs ran back to back: their ratio cancels most of the machine's
        # drift between rounds, so its median is steadier than the ratio of the medians.
        before, after = (by_label[label] for label in trees)
        figures["paired_median_ratio"] = {
            key: round(
                statistics.median(b[key] / a[key] for a, b in zip(before, after, strict=True)), 4
            )
            for key in ("cpu_ms_per_request", "rps")
        }
        summary[load] = figures
    return {"summary": summary, "runs": runs}


def _commit(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.strip()
    return out.stdout.strip() + ("+uncommitted" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gateway-overhead.json")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="gateway process counts to run"
    )
    parser.add_argument(
        "--ledger",
        choices=["compare", "off", "on"],
        default="compare",
        help="compare: all loads ledger off, then off vs on at c=32 interleaved; off/on: "
        "all loads so, no comparison",
    )
    parser.add_argument(
        "--ledger-rounds", type=int, default=3, help="interleaved runs each for the comparison"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout to compare this one with (before/after), in one run",
    )
    parser.add_argument(
        "--journal",
        action="store_true",
        help="this checkout twice, ledger on (SQLite), write-ahead journal off vs on, "
        "interleaved like --against",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="this checkout twice, OpenTelemetry tracing off vs on (every request sampled, "
        "batch exporter, OTLP/HTTP to the mock upstream as collector), interleaved",
    )
    parser.add_argument(
        "--trace-ratio",
        type=float,
        default=1.0,
        help="with --tracing: the share of traces recorded (parentbased_traceidratio); "
        "default 1: every request",
    )
    parser.add_argument(
        "--stream-pieces",
        type=int,
        default=5,
        help="content chunks in each of the mock's streamed answers (default 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved runs each (--against, --journal, --tracing)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH: install it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    tiergate = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    if tiergate is None:
        print("tiergate is not installed in this environment (make install)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    mock_port = free_port()
    (work / "policy.yaml").write_text(POLICY.format(port=mock_port))
    mock = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench/mock_upstream.py"),
            str(mock_port),
            str(args.stream_pieces),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mock_url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
    if args.against is not None or args.journal or args.tracing:
        envs: dict[str, dict[str, str]] = {}
        if args.tracing:
            trees = {"tracing-off": ROOT, "tracing-on": ROOT}
            envs = {
                "tracing-on": {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{mock_port}",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(args.trace_ratio),
                }
            }
        elif args.journal:
            trees = {"journal-off": ROOT, "journal-on": ROOT}
            envs = {
                label: {
                    "TIERGATE_LEDGER": "true",
                    "TIERGATE_JOURNAL": "true" if label == "journal-on" else "false",
                    "TIERGATE_DATABASE_URL": f"sqlite:///{work / label}-ledger.db",
                    "TIERGATE_OUTBOX_PATH": str(work / f"{label}-outbox.db"),
                }
                for label in trees
            }
        else:
            assert args.against is not None
            trees = {"against": args.against.resolve(), "this": ROOT}
            if args.ledger == "on":  # both trees with the ledger and its journal on (SQLite)
                envs = {
                    label: {
                        "TIERGATE_LEDGER": "true",
                        "TIERGATE_JOURNAL": "true",
                        "TIERGATE_DATABASE_URL": f"sqlite:///{work / label}-ledger.db",
                        "TIERGATE_OUTBOX_PATH": str(work / f"{label}-outbox.db"),
                        "TIERGATE_JOURNAL_DIR": str(work / f"{label}-journal"),
                    }
                    for label in trees
                }
        load_before = os.getloadavg()
        try:
            wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock)
            compared = compare_trees(work, mock_url, trees, args.duration, args.rounds, envs)
        finally:
            mock.terminate()
            mock.wait(timeout=30)
        commits = {label: _commit(tree) for label, tree in trees.items()}
        compared = {
            "benchmark": "gateway overhead, two set-ups in one run (wrk, mock upstream)",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_before": load_before,
                "load_after": os.getloadavg(),
            },
            "trees": {k: {"commit": commits[k]} for k in trees},
            "duration_s": args.duration,
            "rounds": args.rounds,
            "stream_pieces": args.stream_pieces,
            **({"trace_ratio": args.trace_ratio} if args.tracing else {}),
            **compared,
        }
        args.out.write_text(json.dumps(compared, indent=2) + "\n")
        print(json.dumps(compared["summary"], indent=2))
        return 0
    results: dict[str, Any] = {}
    ledger_summary: dict[str, Any] = {}
    try:
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock)
        for mode in ("json", "stream"):
            script = wrk_script(work, stream=mode == "stream")
            for connections in (1, 32):
                run_wrk(mock_url, script, connections, 2)  # warm-up
                key = f"{mode}/c{connections}/mock"
                results[key] = run_wrk(mock_url, script, connections, args.duration)
                print(key, json.dumps(results[key]), flush=True)
        for workers in args.workers:
            results.update(
                bench_gateway(tiergate, work, workers, args.duration, ledger=args.ledger == "on")
            )
            if args.ledger == "compare":
                ledger_summary.update(
                    compare_ledger(tiergate, work, workers, args.duration, args.ledger_rounds)
                )
    finally:
        mock.terminate()
        mock.wait(timeout=30)

    summary: dict[str, Any] = {}
    suffix = "-ledger" if args.ledger == "on" else ""
    for workers in args.workers:
        for mode in ("json", "stream"):
            gw, base = f"{mode}/c{{c}}/gateway-w{workers}{suffix}", f"{mode}/c{{c}}/mock"
            c1, m1, c32 = (
                results[gw.format(c=1)],
                results[base.format(c=1)],
                results[gw.format(c=32)],
            )
            summary[f"workers={workers}/{mode}"] = {
                "p50_added_ms_c1": round(c1["p50_ms"] - m1["p50_ms"], 3),
                "p99_added_ms_c1": round(c1["p99_ms"] - m1["p99_ms"], 3),
                "rps_c1": c1["rps"],
                "rps_c32": c32["rps"],
                "p50_ms_c32": c32["p50_ms"],
                "p99_ms_c32": c32["p99_ms"],
            }
    scorer = scorer_timing()
    verdict: dict[str, bool] = {}
    for name, figures in summary.items():
        for target, limit in TARGETS.items():
            if target in figures:
                value = figures[target]
                verdict[f"{name}.{target}"] = (
                    value >= limit if target.startswith("rps") else value <= limit
                )
    verdict["scorer_p50_us"] = scorer["p50_us"] <= TARGETS["scorer_p50_us"]
    for name, figures in ledger_summary.items():
        if "loss_pct" in figures:
            verdict[f"{name}.ledger_loss_pct"] = figures["loss_pct"] <= LEDGER_MAX_LOSS_PCT
        else:  # every answered request has its row once the gateway has drained
            verdict[f"{name}_complete"] = figures["ledger_rows"] >= figures["requests_completed"]
    for name, figures in results.items():
        if name.startswith("ledger/"):
            verdict[f"{name}_complete"] = figures["ledger_rows"] >= figures["requests_completed"]
    report = {
        "benchmark": "gateway overhead (tiergate vs mock upstream, wrk)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
        },
        "duration_s": args.duration,
        "ledger": args.ledger,
        "targets": {**TARGETS, "ledger_max_loss_pct": LEDGER_MAX_LOSS_PCT},
        "summary": summary,
        "ledger_on_vs_off": ledger_summary,
        "scorer": scorer,
        "meets_targets": verdict,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                "summary": summary,
                "ledger_on_vs_off": ledger_summary,
                "scorer": scorer,
                "meets_targets": verdict,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

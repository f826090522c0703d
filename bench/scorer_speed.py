"""Scorer speed: how long the learned scorer takes per request on the request path (target:
p50 <= 1 ms on this CPU, no GPU), next to the v1 scorer.

Prompts: every 8th labelled prompt of the RouteLLM pairs (``../shared/research/data/routellm``:
GSM8K word problems, MMLU multiple-choice questions up to ~11,000 characters, MT-Bench
instructions), in file order. Each
prompt is scored as a one-message chat request through ``Policy.score`` (the call the router
makes), after one warm-up pass; every call is timed with ``perf_counter_ns``. Also measured: the
import time of the learned scorer's module in a fresh interpreter (it must not pull numpy or
scikit-learn onto the request path) and the artifact's load time.

Run:  python bench/scorer_speed.py [--every 8] [--rounds 3] [--out bench/results/scorer-speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.policy import parse_policy
from gateway.scoring.learned import DEFAULT_ARTIFACT, parse_artifact
from gateway.tools.scorer.labels import ROUTELLM_PAIRS, read_labels, shared_data

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: 0.5}
  - {name: strong, backends: [strong]}
scorer: {kind: %s}
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scorer-speed.json")
    args = parser.parse_args()
    items = read_labels([shared_data(ROUTELLM_PAIRS, near=ROOT)]).items[:: args.every]
    requests = [(i.messages, i.max_tokens) for i in items]
    results = {}
    for kind in ("learned", "v1"):
        policy = parse_policy((POLICY % kind).encode(), source=kind, base_dir=ROOT)
        for messages, max_tokens in requests:  # warm-up
            policy.score(messages, max_tokens)
        times_us: list[float] = []
        for _ in range(args.rounds):
            for messages, max_tokens in requests:
                started = time.perf_counter_ns()
                policy.score(messages, max_tokens)
                times_us.append((time.perf_counter_ns() - started) / 1000)
        results[kind] = {
            "calls": len(times_us),
            "p50_us": round(percentile(times_us, 50), 1),
            "p90_us": round(percentile(times_us, 90), 1),
            "p99_us": round(percentile(times_us, 99), 1),
            "max_us": round(max(times_us), 1),
        }
        print(kind, results[kind], flush=True)
    probe = (
        "import sys, time; t = time.perf_counter(); import gateway.scoring.learned; "
        "print(time.perf_counter() - t, 'numpy' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds, numpy_loaded, sklearn_loaded = out.stdout.split()
    load_started = time.perf_counter()
    parse_artifact(DEFAULT_ARTIFACT.read_bytes(), str(DEFAULT_ARTIFACT))
    load_ms = (time.perf_counter() - load_started) * 1000.0
    report = {
        "benchmark": "scorer-speed",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "prompts": len(requests),
        "prompt_chars_p50": percentile([float(len(m[0].content)) for m, _ in requests], 50),
        "prompt_chars_max": max(len(m[0].content) for m, _ in requests),
        "rounds": args.rounds,
        "target": "learned p50 <= 1000 us",
        "scorers": results,
        "meets_target": results["learned"]["p50_us"] <= 1000,
        "import_learned_module_ms": round(float(seconds) * 1000, 1),
        "import_pulls_numpy": numpy_loaded == "True",
        "import_pulls_sklearn": sklearn_loaded == "True",
        "artifact_bytes": DEFAULT_ARTIFACT.stat().st_size,
        "artifact_load_ms": round(load_ms, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

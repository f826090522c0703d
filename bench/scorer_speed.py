"""Scorer speed: how long the learned and the v2 scorer take per request on the request path
(target: p50 <= 1 ms on this CPU, no GPU; for v2 also for a 1,000-token prompt), next to the v1
scorer.

Prompts: every 8th labelled prompt of the RouteLLM pairs (``../shared/research/data/routellm``:
GSM8K word problems, MMLU multiple-choice questions up to ~11,000 characters, MT-Bench
instructions), in file order. Each
prompt is scored as a one-message chat request through ``Policy.score`` (the call the router
makes), after one warm-up pass; every call is timed with ``perf_counter_ns``. A second set times
one 1,000-token prompt (o200k tokens: an MMLU question's text repeated and cut to size) 300
times per scorer. Also measured: the
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

from adapters.base import Message
from gateway.policy import Policy, parse_policy
from gateway.scoring.learned import DEFAULT_ARTIFACT, parse_artifact
from gateway.scoring.tokens import count_exact
from gateway.scoring.v2 import DEFAULT_V2_ARTIFACT, parse_v2
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


Request = tuple[tuple[Message, ...], int | None]


def prompt_of_tokens(requests: list[Request], tokens: int) -> tuple[Message, ...]:
    """One user message of exactly ``tokens`` tokens: the labelled prompts' text, joined."""
    text = "\n\n".join(m[0].content for m, _ in requests[:200])
    low, high = 0, len(text)
    while low < high:  # the longest prefix with at most ``tokens`` tokens
        middle = (low + high + 1) // 2
        if count_exact(text[:middle]) <= tokens:
            low = middle
        else:
            high = middle - 1
    return (Message(role="user", content=text[:low]),)


def timed(policy: Policy, requests: list[Request], rounds: int) -> dict[str, float]:
    for messages, max_tokens in requests:  # warm-up
        policy.score(messages, max_tokens)
    times_us: list[float] = []
    for _ in range(rounds):
        for messages, max_tokens in requests:
            started = time.perf_counter_ns()
            policy.score(messages, max_tokens)
            times_us.append((time.perf_counter_ns() - started) / 1000)
    return {
        "calls": len(times_us),
        "p50_us": round(percentile(times_us, 50), 1),
        "p90_us": round(percentile(times_us, 90), 1),
        "p99_us": round(percentile(times_us, 99), 1),
        "max_us": round(max(times_us), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scorer-speed.json")
    args = parser.parse_args()
    items = read_labels([shared_data(ROUTELLM_PAIRS, near=ROOT)]).items[:: args.every]
    requests = [(i.messages, i.max_tokens) for i in items]
    long_request: list[Request] = [(prompt_of_tokens(requests, 1000), None)]
    results = {}
    long_results = {}
    for kind in ("learned", "v2", "v1"):
        policy = parse_policy((POLICY % kind).encode(), source=kind, base_dir=ROOT)
        results[kind] = timed(policy, requests, args.rounds)
        long_results[kind] = timed(policy, long_request, 300)
        print(kind, results[kind], "1,000 tokens:", long_results[kind], flush=True)
    probe = (
        "import sys, time; t = time.perf_counter(); import gateway.scoring.learned; "
        "print(time.perf_counter() - t, 'numpy' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds, numpy_loaded, sklearn_loaded = out.stdout.split()
    load_started = time.perf_counter()
    parse_artifact(DEFAULT_ARTIFACT.read_bytes(), str(DEFAULT_ARTIFACT))
    load_ms = (time.perf_counter() - load_started) * 1000.0
    load_started = time.perf_counter()
    parse_v2(DEFAULT_V2_ARTIFACT.read_bytes(), str(DEFAULT_V2_ARTIFACT))
    v2_load_ms = (time.perf_counter() - load_started) * 1000.0
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
        "target": "learned and v2 p50 <= 1000 us; v2 p50 <= 1000 us on a 1,000-token prompt",
        "scorers": results,
        "one_1000_token_prompt": long_results,
        "meets_target": results["learned"]["p50_us"] <= 1000
        and results["v2"]["p50_us"] <= 1000
        and long_results["v2"]["p50_us"] <= 1000,
        "import_learned_module_ms": round(float(seconds) * 1000, 1),
        "import_pulls_numpy": numpy_loaded == "True",
        "import_pulls_sklearn": sklearn_loaded == "True",
        "artifact_bytes": DEFAULT_ARTIFACT.stat().st_size,
        "artifact_load_ms": round(load_ms, 1),
        "v2_artifact_bytes": DEFAULT_V2_ARTIFACT.stat().st_size,
        "v2_artifact_load_ms": round(v2_load_ms, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

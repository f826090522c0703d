"""How long the savings report takes over a big ledger: ``build_report`` for a month of 1M rows,
in total, by team and by day, for one team, and the dashboard's three reports (``collect``),
with two versions of the code interleaved in one run.

    git archive <old commit> gateway adapters | tar -x -C /tmp/report-before
    PYTHONPATH=. .venv/bin/python bench/report_scale.py --url sqlite:////tmp/report-1m.db \
        --before /tmp/report-before --rows 1000000 --rounds 2 --out bench/results/report-scale.json

The ledger is filled once (a 30-day month, 50 keys in 7 teams, two tiers, one row in 20 a
fallback, one in 50 a cache hit) through this code's schema, and reused by later runs on the
same database (a PostgreSQL URL works too). Each measurement runs in a process of its own with
the code under test on ``PYTHONPATH`` (``--before``, and this checkout), alternating, so both
see the same host load; the worker prints the seconds and the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
SHAPES: tuple[dict[str, Any], ...] = (
    {},
    {"by": "team"},
    {"by": "day"},
    {"team": "t3"},
    {"dashboard": True},
)
HERE = Path(__file__).resolve().parent.parent


def fill(url: str, rows: int, seed: int = 7) -> None:
    """``rows`` plausible requests spread over the month (nothing when the ledger has them)."""
    from gateway.ledger.db import make_engine, upgrade
    from gateway.ledger.models import RequestRow

    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(seed)
    try:
        with engine.begin() as connection:
            if connection.execute(select(func.count()).select_from(RequestRow)).scalar_one():
                return
            batch: list[dict[str, Any]] = []
            for i in range(rows):
                fallback = i % 20 == 0
                hit = i % 50 == 1
                prompt, completion = rng.randint(20, 2000), rng.randint(5, 800)
                batch.append(
                    {
                        "id": f"00000000-0000-7000-8000-{i:012d}",
                        "ts": START + timedelta(seconds=i * DAYS * 86400 / rows),
                        "key_id": f"k{i % 50}",
                        "team": f"t{i % 7}",
                        "policy_hash": "h",
                        "route": "auto",
                        "tier": "strong" if fallback else rng.choice(("cheap", "strong")),
                        "backend": "remote" if fallback else "local",
                        "model": "m",
                        "score": 0.1,
                        "cache": "hit" if hit else "miss",
                        "status": 200 if i % 97 else 502,
                        "attempts": 2 if fallback else 1,
                        "fallback_chain": "local>remote" if fallback else "local",
                        "stream": bool(i % 3),
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "cached_tokens": 0,
                        "usage_estimated": False,
                        "latency_ms": rng.uniform(5, 3000),
                        "ttft_ms": rng.uniform(1, 300) if i % 3 else None,
                        "cost_usd": Decimal(0) if hit else Decimal(prompt + 4 * completion) / 10**8,
                        "cost_source": "cache" if hit else "policy",
                        "baseline_cost_usd": Decimal(25 * prompt + 100 * completion) / 10**7,
                    }
                )
                if len(batch) == 20_000:
                    connection.execute(insert(RequestRow), batch)
                    batch = []
            if batch:
                connection.execute(insert(RequestRow), batch)
    finally:
        engine.dispose()


def worker(url: str, shape: dict[str, Any]) -> dict[str, Any]:
    """One timed call of the code on ``PYTHONPATH``: a report, or the dashboard's reports."""
    from gateway.ledger.db import make_engine
    from gateway.ledger.report import build_report

    engine = make_engine(url)
    until = START + timedelta(days=DAYS)
    try:
        started = time.perf_counter()
        if shape.get("dashboard"):
            from gateway.http.dashboard import collect

            report = collect(engine, START, until).by_day
        else:
            report = build_report(engine, since=START, until=until, **shape)
        seconds = round(time.perf_counter() - started, 3)
    finally:
        engine.dispose()
    totals = report["totals"]
    return {
        "seconds": seconds,
        "requests": totals["requests"],
        "cost_usd": totals["cost_usd"],
        "baseline_cost_usd": totals["baseline_cost_usd"],
        "latency_ms_p50": totals["latency_ms_p50"],
        "latency_ms_p95": totals["latency_ms_p95"],
        "ttft_ms_p50": totals["ttft_ms_p50"],
        "percentiles": report.get("percentiles", {"max_relative_error": 0.0}),
    }


def measure(code: Path, url: str, shape: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    found = subprocess.run(
        [sys.executable, __file__, "--worker", "--url", url, "--shape", json.dumps(shape)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(found.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before", type=Path, help="the older code's checkout, to compare")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.url, json.loads(args.shape))), flush=True)
        return
    started = time.perf_counter()
    fill(args.url, args.rows)
    print(json.dumps({"filled_s": round(time.perf_counter() - started, 1)}), flush=True)
    codes = {"after": HERE} if args.before is None else {"before": args.before, "after": HERE}
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for shape in SHAPES:
            for name, code in codes.items():
                row = {
                    "round": round_,
                    "code": name,
                    "shape": shape,
                    **measure(code, args.url, shape),
                }
                print(json.dumps(row), flush=True)
                runs.append(row)
    out = {"rows": args.rows, "database": args.url.split(":", 1)[0], "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How long the savings report takes over a big ledger (SQLite): ``build_report`` for a month of
1M rows, in total, by team and by day, and for one team.

    PYTHONPATH=. .venv/bin/python bench/report_scale.py --db /tmp/report-1m.db --rows 1000000 \
        --out bench/results/report-scale.json

The ledger is filled once (a 30-day month, 50 keys in 7 teams, two tiers, one row in 20 a
fallback, one in 50 a cache hit) and reused by later runs on the same ``--db``. To compare two
versions of the code, run it with each on ``PYTHONPATH`` against the same file: the result
names the ``build_report`` module it timed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

import gateway.ledger.report as report_module
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.ledger.report import build_report

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
SHAPES: tuple[dict[str, Any], ...] = ({}, {"by": "team"}, {"by": "day"}, {"team": "t3"})


def fill(url: str, rows: int, seed: int = 7) -> None:
    """``rows`` plausible requests spread over the month (nothing when the ledger has them)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    url = f"sqlite:///{args.db}"
    fill(url, args.rows)
    engine = make_engine(url)
    results: list[dict[str, Any]] = []
    try:
        for shape in SHAPES:
            for _ in range(args.rounds):
                started = time.perf_counter()
                report = build_report(
                    engine, since=START, until=START + timedelta(days=DAYS), **shape
                )
                seconds = round(time.perf_counter() - started, 2)
                row = {
                    "shape": shape or {"by": None},
                    "requests": report["totals"]["requests"],
                    "cost_usd": report["totals"]["cost_usd"],
                    "latency_ms_p95": report["totals"]["latency_ms_p95"],
                    "seconds": seconds,
                }
                print(json.dumps(row), flush=True)
                results.append(row)
    finally:
        engine.dispose()
    out = {"module": report_module.__file__, "rows": args.rows, "runs": results}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

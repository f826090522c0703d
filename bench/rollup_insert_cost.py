"""What the savings report's rollup trigger (migration 0014) costs the ledger's inserts:
``insert_batch`` of 20,000 rows in batches of 500 into a fresh ledger at 0013 (no trigger) and
at head, alternating, three times, on SQLite (a file under /tmp) and PostgreSQL (a database of
its own on 127.0.0.1:5432, user postgres, dropped after).

    PYTHONPATH=. .venv/bin/python bench/rollup_insert_cost.py \
        --out bench/results/rollup-insert-cost.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.store import insert_batch
from tests.support.ledger_rows import ledger_entry

ROWS = 20_000
BATCH = 500


def entries(seed: int = 1) -> list[LedgerEntry]:
    """Rows like ``report_scale``'s: 50 keys in 7 teams, two tiers, 1 in 97 failed."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    return [
        ledger_entry(
            str(uuid.uuid4()),
            ts=start + timedelta(milliseconds=50 * i),
            key_id=f"k{i % 50}",
            team=f"t{i % 7}",
            tier=rng.choice(("cheap", "strong")),
            status=200 if i % 97 else 502,
            latency_ms=rng.uniform(5, 3000),
            ttft_ms=rng.uniform(1, 300) if i % 3 else None,
            prompt_tokens=rng.randint(20, 2000),
            completion_tokens=rng.randint(5, 800),
            cost_usd=Decimal(rng.randint(1, 10**6)) / 10**12,
            baseline_cost_usd=Decimal(rng.randint(1, 10**8)) / 10**12,
        )
        for i in range(ROWS)
    ]


def rate(url: str, revision: str, rows: list[LedgerEntry]) -> int:
    upgrade(url, revision)
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            insert_batch(engine, rows[i : i + BATCH])
        return round(len(rows) / (time.perf_counter() - started))
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = entries()
    runs: list[dict[str, Any]] = []
    admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    try:
        for rep in range(3):
            for db in ("sqlite", "postgresql"):
                for revision in ("0013", "head"):
                    if db == "sqlite":
                        path = Path(f"/tmp/tiergate-rollup-cost-{uuid.uuid4().hex}.db")
                        found = rate(f"sqlite:///{path}", revision, rows)
                        for leftover in path.parent.glob(path.name + "*"):
                            leftover.unlink()
                    else:
                        name = f"tiergate_rollup_cost_{uuid.uuid4().hex[:12]}"
                        admin.execute(f"CREATE DATABASE {name}")
                        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                        try:
                            found = rate(url, revision, rows)
                        finally:
                            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
                    run = {"rep": rep, "db": db, "schema": revision, "rows_per_s": found}
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    finally:
        admin.close()
    medians = {
        f"{db} {revision}": statistics.median(
            r["rows_per_s"] for r in runs if r["db"] == db and r["schema"] == revision
        )
        for db in ("sqlite", "postgresql")
        for revision in ("0013", "head")
    }
    print(json.dumps(medians))
    out = {"rows": ROWS, "batch": BATCH, "median_rows_per_s": medians, "runs": runs}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""What the savings report's rollup trigger (migration 0014) costs the ledger's inserts:
20,000 rows in batches of 500 into a fresh ledger, alternating, three times: on SQLite (a file
under /tmp) at 0013 (no trigger) and at head; on PostgreSQL (a database of its own on
127.0.0.1:5432, user postgres, dropped after) by one writer and by four at once (replicas, a pool
each, writing the same hour), each at 0013 and at head, and as before this change
(``before``: a row-level trigger, and ``executemany``: one INSERT per row; ``0013 executemany``
its baseline). A batch PostgreSQL aborts (a deadlock) is counted, its rows not.

    PYTHONPATH=. .venv/bin/python bench/rollup_insert_cost.py \
        --out bench/results/rollup-insert-cost.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import RequestRow
from gateway.ledger.store import insert_batch
from tests.support.ledger_rows import ledger_entry

ROWS = 20_000
BATCH = 500
WRITERS = 4
MIGRATION = Path(__file__).parents[1] / "gateway/ledger/migrations/versions/0014_report_rollup.py"
# (schema, insert path) per variant; SQLite has the first two only.
VARIANTS = {
    "0013": ("0013", "batch"),
    "head": ("head", "batch"),
    "0013 executemany": ("0013", "executemany"),
    "before": ("row trigger", "executemany"),
}


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


def row_trigger(engine: Engine) -> None:
    """Migration 0014's trigger as it was before: one upsert per inserted row and table part."""
    spec = importlib.util.spec_from_file_location("rollup_0014", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    m: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    one = (("requests", "1"),)
    parts = (
        (m.ROLLUP, m._hourly(False), m._sums(False), "1 = 1"),
        (m.LATENCY, m._daily(False, "'latency'", "{r}.latency_ms"), one, "NEW.status = 200"),
        (
            m.LATENCY,
            m._daily(False, "'ttft'", "{r}.ttft_ms"),
            one,
            "NEW.status = 200 AND NEW.ttft_ms IS NOT NULL",
        ),
    )
    body = " ".join(m._upsert(t, k, v, "NEW", w) for t, k, v, w in parts)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TRIGGER {m.TRIGGER} ON ledger_requests"))
        connection.execute(
            text(
                f"CREATE OR REPLACE FUNCTION {m.FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN {body} RETURN NULL; END $$"
            )
        )
        connection.execute(
            text(
                f"CREATE TRIGGER {m.TRIGGER} AFTER INSERT ON ledger_requests FOR EACH ROW "
                f"EXECUTE FUNCTION {m.FUNCTION}()"
            )
        )


def executemany(engine: Engine, rows: Sequence[LedgerEntry]) -> None:
    """``insert_batch`` as it was before on PostgreSQL: psycopg's ``executemany``."""
    statement = postgresql.insert(RequestRow).on_conflict_do_nothing(index_elements=["id"])
    names = [c.name for c in RequestRow.__table__.columns]
    with engine.begin() as connection:
        connection.execute(statement, [{n: getattr(e, n) for n in names} for e in rows])


def rate(url: str, variant: str, rows: list[LedgerEntry], writers: int) -> dict[str, int]:
    schema, path = VARIANTS[variant]
    upgrade(url, "head" if schema == "row trigger" else schema)
    engines = [make_engine(url) for _ in range(writers)]
    if schema == "row trigger":
        row_trigger(engines[0])
    insert = insert_batch if path == "batch" else executemany
    share = [rows[w::writers] for w in range(writers)]  # the same hour, interleaved
    failed = [0] * writers
    ready = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        ready.wait()
        mine = share[w]
        for i in range(0, len(mine), BATCH):
            try:
                insert(engines[w], mine[i : i + BATCH])
            except DBAPIError:
                failed[w] += 1

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for engine in engines:
            engine.dispose()
    lost = sum(failed) * BATCH
    return {"rows_per_s": round((len(rows) - lost) / elapsed), "failed_batches": sum(failed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = entries()
    runs: list[dict[str, Any]] = []
    admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    cases = [("sqlite", v, 1) for v in ("0013", "head")] + [
        ("postgresql", v, n) for n in (1, WRITERS) for v in VARIANTS
    ]
    try:
        for rep in range(3):
            for db, variant, writers in cases:
                if db == "sqlite":
                    path = Path(f"/tmp/tiergate-rollup-cost-{uuid.uuid4().hex}.db")
                    found = rate(f"sqlite:///{path}", variant, rows, writers)
                    for leftover in path.parent.glob(path.name + "*"):
                        leftover.unlink()
                else:
                    name = f"tiergate_rollup_cost_{uuid.uuid4().hex[:12]}"
                    admin.execute(f"CREATE DATABASE {name}")
                    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                    try:
                        found = rate(url, variant, rows, writers)
                    finally:
                        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
                run = {"rep": rep, "db": db, "variant": variant, "writers": writers, **found}
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        admin.close()
    medians = {
        f"{db} {variant} x{writers}": {
            key: statistics.median(
                r[key]
                for r in runs
                if (r["db"], r["variant"], r["writers"]) == (db, variant, writers)
            )
            for key in ("rows_per_s", "failed_batches")
        }
        for db, variant, writers in cases
    }
    print(json.dumps(medians))
    out = {"rows": ROWS, "batch": BATCH, "medians": medians, "runs": runs}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

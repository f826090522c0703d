"""Ledger writer benchmark: how many rows per second ``LedgerWriter`` makes durable, into SQLite
and into PostgreSQL.

N realistic ``LedgerEntry`` rows (UUIDv7 ids, mixed tiers, backends, streams, failures,
fallbacks, costs) are built first; then they are ``record()``-ed from the event loop as a busy
request path would (bursts of ``--burst`` rows between yields to the loop, so the writer task
runs alongside), and the clock stops when ``await writer.flush()`` returns: every row committed
to the database. The table's row count is checked (exactly N, none in the outbox).

Cases, per database: ``capacity`` (rows offered as fast as the loop can: the writer's sustained
rate; best of ``--rounds``, every round must meet the target), ``paced_at_target`` (5,000 rows/s
offered steadily: the queue must stay shallow and the last row land at once), and a batch-size
sweep. SQLite: a fresh file in a temporary directory with ``make_engine``'s pragmas (WAL,
synchronous=NORMAL: a committed row survives the process dying, not a power cut), plus one case
with synchronous=FULL (an fsync per batch: survives a power cut too). PostgreSQL: a fresh
database on the local server (127.0.0.1:5432, user postgres), created and dropped by this
script; its commits are fsynced (synchronous_commit=on). Both schemas come from the Alembic
history (``upgrade``), as in production. The flood overflows the writer's bounded queue (10,000)
on purpose; its "queue full" warning is silenced here.

Run:  python bench/ledger_writer.py [--rows 50000] [--out bench/results/ledger-writer.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
import structlog  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from gateway.ids import request_id  # noqa: E402
from gateway.ledger.db import make_engine, upgrade  # noqa: E402
from gateway.ledger.entry import LedgerEntry  # noqa: E402
from gateway.ledger.models import RequestRow  # noqa: E402
from gateway.ledger.outbox import Outbox  # noqa: E402
from gateway.ledger.writer import LedgerWriter  # noqa: E402

TARGET_ROWS_PER_S = 5000.0
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}

# (tier, backend, model, usd per input token, per output token) - as the demo policy prices them
_BACKENDS = (
    ("tiny", "tiny", "SmolLM2-135M-Instruct-Q4_1", None, None),
    ("local", "local", "llama3.2:3b", None, None),
    ("remote", "remote", "openai/gpt-4o-mini", Decimal("1.5e-7"), Decimal("6e-7")),
)
_BASELINE = (Decimal("2.5e-6"), Decimal("1e-5"))  # openai/gpt-4o


def make_entries(n: int, seed: int = 1234) -> list[LedgerEntry]:
    """``n`` varied rows, as ``gateway.routing.accounting`` builds them."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    entries = []
    for i in range(n):
        tier, backend, model, p_in, p_out = rng.choice(_BACKENDS)
        stream = rng.random() < 0.4
        failed = rng.random() < 0.02
        fallback = not failed and rng.random() < 0.05
        prompt, completion = rng.randint(8, 2000), 0 if failed else rng.randint(1, 512)
        latency = rng.uniform(20, 4000)
        if p_in is not None and p_out is not None:
            cost: Decimal | None = prompt * p_in + completion * p_out
            source = "litellm"
        else:
            cost = Decimal(str(round(latency, 3))) * Decimal("1.6e-8")
            source = "hardware"
        entries.append(
            LedgerEntry(
                id=request_id(),
                ts=start + timedelta(milliseconds=i * 10),
                key_id=rng.choice(("local", "team-a", "team-b", "key-3f9a0c12de")),
                policy_hash="4be1c0ffee01",
                route=rng.choice(("auto", "auto", "auto", "cheap", "best")),
                tier=tier,
                backend=backend,
                model=model,
                score=round(rng.random(), 6),
                cache="off",
                canary_arm=None,
                status=502 if failed else 200,
                error_class="BackendUnavailable" if failed or fallback else None,
                attempts=2 if fallback else 1,
                fallback_chain=f"local>{backend}" if fallback else backend,
                stream=stream,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=0,
                usage_estimated=stream and rng.random() < 0.01,
                latency_ms=round(latency, 3),
                ttft_ms=round(latency * 0.2, 3) if stream else None,
                server_ms=round(latency * 0.95, 3),
                load_ms=None,
                cost_usd=None if failed else cost,
                cost_source="failed" if failed else source,
                baseline_cost_usd=prompt * _BASELINE[0] + completion * _BASELINE[1],
            )
        )
    return entries


@contextlib.contextmanager
def sqlite_url(work: Path) -> Iterator[str]:
    yield f"sqlite:///{work / 'ledger-bench.db'}"


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
    name = f"tiergate_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**PG, autocommit=True) as connection:  # type: ignore[arg-type]
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with psycopg.connect(**PG, autocommit=True) as connection:  # type: ignore[arg-type]
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def full_sync(engine: sqlalchemy.Engine) -> None:
    """SQLite: fsync every commit (after make_engine's synchronous=NORMAL, so this one wins)."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _full(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous=FULL")


async def run_writer(
    url: str,
    work: Path,
    entries: list[LedgerEntry],
    *,
    batch_size: int,
    burst: int,
    rate: float | None = None,
    synchronous_full: bool = False,
) -> dict[str, Any]:
    """Record ``entries`` - as fast as possible (``rate`` None: the writer's capacity), or at
    ``rate`` rows/s in bursts (does it keep up: how deep does the queue get?) - then flush."""
    upgrade(url)
    engine = make_engine(url)
    if synchronous_full:
        full_sync(engine)
    outbox = Outbox(work / f"outbox-{uuid.uuid4().hex[:6]}.db")
    writer = LedgerWriter(engine, outbox, batch_size=batch_size)
    writer.start()
    record_s = 0.0
    max_depth = 0
    started = time.perf_counter()
    for i in range(0, len(entries), burst):
        if rate is not None:  # the next burst is due at i / rate seconds
            due = started + i / rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
        t = time.perf_counter()
        for entry in entries[i : i + burst]:
            writer.record(entry)
        record_s += time.perf_counter() - t
        max_depth = max(max_depth, writer.queue_depth)
        await asyncio.sleep(0)  # the request path yields to the loop between requests
    recorded = time.perf_counter() - started
    await writer.flush()
    elapsed = time.perf_counter() - started
    in_outbox = outbox.size
    await writer.aclose()  # disposes the engine
    outbox.close()
    check = sqlalchemy.create_engine(url)
    try:
        with check.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(RequestRow)).scalar_one()
            distinct = connection.execute(select(func.count(func.distinct(RequestRow.id)))).scalar()
    finally:
        check.dispose()
    return {
        "rows": len(entries),
        "rows_in_table": rows,
        "distinct_ids": distinct,
        "rows_in_outbox": in_outbox,
        "row_count_ok": rows == len(entries) == distinct and in_outbox == 0,
        "batch_size": batch_size,
        "burst": burst,
        "offered_rows_per_s": rate,
        "sqlite_synchronous": ("FULL" if synchronous_full else "NORMAL")
        if url.startswith("sqlite")
        else None,
        "wall_s": round(elapsed, 3),
        "rows_per_s": round(len(entries) / elapsed, 1),
        "all_recorded_after_s": round(recorded, 3),
        "flush_lag_s": round(elapsed - recorded, 3),
        "max_queue_depth": max_depth,
        "record_us_per_row": round(record_s / len(entries) * 1e6, 3),
    }


def load() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": uptime, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def run_case(database: str, work: Path, rows: int, rounds: int, **options: Any) -> dict[str, Any]:
    """``rounds`` runs of one case on fresh databases; the best and every round's rate."""
    runs = []
    for _ in range(rounds):
        entries = make_entries(rows)  # fresh ids each round
        opener = sqlite_url(work) if database == "sqlite" else postgres_url()
        with opener as url:
            if database == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(url.split("///", 1)[1] + suffix).unlink(missing_ok=True)
            runs.append(asyncio.run(run_writer(url, work, entries, **options)))
        print(database, json.dumps(runs[-1]), flush=True)
    best = max(runs, key=lambda r: r["rows_per_s"])
    return {
        "best": best,
        "rows_per_s_all_rounds": [r["rows_per_s"] for r in runs],
        "row_count_ok": all(r["row_count_ok"] for r in runs),
    }


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=LedgerWriter.DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=[100, 2000], help="other batch sizes, 1 round each"
    )
    parser.add_argument("--burst", type=int, default=50, help="rows recorded between yields")
    parser.add_argument("--rounds", type=int, default=3, help="capacity runs per database")
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ledger-writer.json")
    parser.add_argument("--note", default=None, help="free text kept in the result (e.g. load)")
    args = parser.parse_args()
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "load_before": load(),
    }
    common = {"burst": args.burst}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tiergate-ledger-bench-") as tmp:
        work = Path(tmp)
        for db in args.databases:
            cases: dict[str, Any] = {}
            # Capacity: rows offered as fast as the loop can, the writer's sustained rate.
            cases["capacity"] = run_case(
                db, work, args.rows, args.rounds, batch_size=args.batch_size, **common
            )
            # Paced: the target rate offered steadily; the writer must keep up (shallow queue).
            cases["paced_at_target"] = run_case(
                db,
                work,
                args.rows // 2,
                1,
                batch_size=args.batch_size,
                rate=TARGET_ROWS_PER_S,
                **common,
            )
            if db == "sqlite":  # fsync on every commit: what durability against power loss costs
                cases["capacity_synchronous_full"] = run_case(
                    db,
                    work,
                    args.rows,
                    1,
                    batch_size=args.batch_size,
                    synchronous_full=True,
                    **common,
                )
            for size in args.sweep:
                cases[f"capacity_batch_{size}"] = run_case(
                    db, work, args.rows, 1, batch_size=size, **common
                )
            capacity = cases["capacity"]
            paced = cases["paced_at_target"]["best"]
            results[db] = {
                "rows_per_s": capacity["best"]["rows_per_s"],
                "batch_size": args.batch_size,
                "meets_target": capacity["row_count_ok"]
                and min(capacity["rows_per_s_all_rounds"]) >= TARGET_ROWS_PER_S
                and paced["row_count_ok"]
                and paced["flush_lag_s"] < 1.0,
                "cases": cases,
            }
    machine["load_after"] = load()
    report = {
        "benchmark": "ledger writer (LedgerWriter.record -> flush, rows committed)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "note": args.note,
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "rows": args.rows,
        "rounds": args.rounds,
        "summary": {
            db: {k: r[k] for k in ("rows_per_s", "batch_size", "meets_target")}
            for db, r in results.items()
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {args.out}")
    return 0 if all(r["meets_target"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

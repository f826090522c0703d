"""Outbox write cost with rows waiting: before (a ``SELECT count(*)`` after every write) and
after (the counts kept in the file by triggers).

While the ledger database is away, every batch the writer puts in the outbox, and every batch a
replay takes out, re-measured the outbox; before, that meant counting every waiting row, so a
write got slower the longer the outage (and the replay, which removes a batch at a time, slower
the more there was to replay). This measures ``Outbox.put`` and ``Outbox.remove`` of a batch
(1 row, and 100 rows) on an outbox file already holding 0, 100,000 and 500,000 waiting rows, and
the re-measure that ends every write alone (``measure``: what changed, without the fsync whose
time a busy host's disk makes vary by milliseconds), for
the outbox module of ``--before`` (a git revision, read with ``git show``) and for this
checkout's, on the same file, in alternating passes (the "before" passes drop the counts'
triggers first, as their file would not have them). Also: how long opening the file takes (the
new outbox recounts once there). Files are ``synchronous=FULL``: each write includes an fsync,
as in production.

Run:  python bench/outbox_write.py [--before f2a7ff6] [--out bench/results/outbox-write.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.ledger import outbox as after_module  # noqa: E402
from gateway.ledger.entry import LedgerEntry  # noqa: E402

SIZES = (0, 100_000, 500_000)
BATCHES = (1, 100)


def entry(n: int) -> LedgerEntry:
    return LedgerEntry(
        id=str(uuid.UUID(int=n + 1, version=4)),
        ts=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        key_id="bench",
        policy_hash="0123456789abcdef",
        route="auto",
        tier="cheap",
        backend="small",
        model="small-model",
        score=0.1,
        cache="off",
        canary_arm=None,
        status=200,
        error_class=None,
        attempts=1,
        fallback_chain="small",
        stream=n % 2 == 0,
        prompt_tokens=10 + n % 1000,
        completion_tokens=20 + n % 1000,
        cached_tokens=0,
        usage_estimated=False,
        latency_ms=12.5,
        ttft_ms=3.0,
        server_ms=10.0,
        load_ms=None,
        cost_usd=Decimal("0.000001"),
        cost_source="policy",
        baseline_cost_usd=Decimal("0.00001"),
    )


def before_module(revision: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:gateway/ledger/outbox.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("outbox_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{revision}:gateway/ledger/outbox.py", "exec"), module.__dict__)
    return module


def fill(module: ModuleType, path: Path, rows: int) -> None:
    box = module.Outbox(path)
    for start in range(0, rows, 5000):
        box.put(entry(n) for n in range(start, min(start + 5000, rows)))
    box.close()


def strip_counts(path: Path) -> None:
    """The file as the old code left it: no counts table, no triggers."""
    import sqlite3

    db = sqlite3.connect(path)
    for table in ("outbox", "rejected"):
        for verb in ("in", "out"):
            db.execute(f"DROP TRIGGER IF EXISTS {table}_{verb}")
    db.execute("DROP TABLE IF EXISTS tally")
    db.commit()
    db.close()


def measure(module: ModuleType, path: Path, waiting: int, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    box = module.Outbox(path)
    opened_ms = (time.perf_counter() - started) * 1000
    assert box.size == waiting, (box.size, waiting)
    out: dict[str, Any] = {"open_ms": round(opened_ms, 2)}
    fresh = 10_000_000  # ids not in the file
    for batch in BATCHES:
        puts, removes = [], []
        for _ in range(rounds):
            rows = [entry(fresh + i) for i in range(batch)]
            fresh += batch
            t0 = time.perf_counter()
            box.put(rows)
            t1 = time.perf_counter()
            box.remove([r.id for r in rows])
            t2 = time.perf_counter()
            puts.append((t1 - t0) * 1000)
            removes.append((t2 - t1) * 1000)
        assert box.size == waiting
        for name, times in (("put", puts), ("remove", removes)):
            out[f"{name}_{batch}_median_ms"] = round(statistics.median(times), 3)
            out[f"{name}_{batch}_p90_ms"] = round(statistics.quantiles(times, n=10)[-1], 3)
    # The step that changed, alone: the re-measure every write ends with (no fsync in it, so
    # the host's disk does not blur it).
    measures = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        box._measure()
        measures.append((time.perf_counter() - t0) * 1000)
    out["measure_median_ms"] = round(statistics.median(measures), 3)
    out["measure_p90_ms"] = round(statistics.quantiles(measures, n=10)[-1], 3)
    box.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f2a7ff6", help="git revision of the old outbox")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    before = before_module(args.before)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hx_oops_bench_") as tmp:
        for waiting in SIZES:
            path = Path(tmp) / f"outbox-{waiting}.db"
            fill(before, path, waiting)
            case: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for _ in range(args.passes):
                strip_counts(path)
                case["before"].append(measure(before, path, waiting, args.rounds))
                case["after"].append(measure(after_module, path, waiting, args.rounds))
            file_mb = round(path.stat().st_size / 1024**2, 1)
            results[str(waiting)] = {"file_mib": file_mb, **case}
            print(f"{waiting:>7} rows waiting ({file_mb} MiB):")
            for label in ("before", "after"):
                for n, run in enumerate(case[label]):
                    print(f"  {label:<6} pass {n + 1}: {json.dumps(run)}")
            path.unlink()
    report = {
        "bench": "outbox-write",
        "command": "python bench/outbox_write.py " + " ".join(sys.argv[1:]),
        "before": args.before,
        "after": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": sys.version},
        "rounds": args.rounds,
        "units": "milliseconds per call (median and p90 of the rounds); open_ms: one open",
        "results": results,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""`tiergate outbox` on a full outbox: 100,000 rejected rows (about 100 MiB of them) listed,
exported, retried and dropped by the real command in its own process, whose peak memory (its
VmHWM, as the kernel counted it) stays within a few MiB of the same command's on a nearly
empty outbox: the command runs in the gateway's container, under the memory limit it shares
with the gateway, and a full outbox is 512 MiB of rows by default. Before, `list` and `export`
read every row at once (+120 to +240 MiB here), as did `retry`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ledger.db import upgrade
from gateway.ledger.outbox import WAL_LIMIT_BYTES, Outbox
from tests.ledger.test_outbox_ops import tiergate_env
from tests.ledger.test_writer import entries

ROWS = 100_000
BATCH = 10_000  # the rows of one reject() share its time, as a writer's batch does
UNTIMED = 10  # every 10th row has no time, as an older tiergate left it
HEADROOM_MIB = 48  # more than the few pages the command holds; far less than the rows


# The command's own peak resident memory, as the kernel counted it for its address space
# (VmHWM), written as it exits. (Its rusage is no use here: ru_maxrss keeps the RSS of the
# process it was forked from, this test's, through the exec.)
PEAK = """
import atexit, sys
from pathlib import Path

report = Path(sys.argv.pop(1))


def peak() -> None:
    status = Path("/proc/self/status").read_text().splitlines()
    report.write_text(next(line for line in status if line.startswith("VmHWM:")).split()[1])


atexit.register(peak)
sys.argv[0] = "tiergate"
from gateway.cli.main import main

main()
"""


@dataclass(frozen=True, slots=True)
class Measured:
    code: int
    stdout: str
    stderr: str
    peak_mib: float


def measured(tmp: Path, *args: str, env: dict[str, str]) -> Measured:
    """``tiergate *args`` (its ``main`` in a process of its own) run to its end."""
    out, err, peak = tmp / "stdout", tmp / "stderr", tmp / "peak"
    peak.unlink(missing_ok=True)
    root = str(Path(__file__).resolve().parents[2])
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, str(peak), *args],
            env={**tiergate_env(env), "PYTHONPATH": root},
            stdout=stdout,
            stderr=stderr,
            timeout=300,
            check=False,
        )
    kib = int(peak.read_text())
    return Measured(done.returncode, out.read_text(), err.read_text(), kib / 1024)


def make_outbox(path: Path, rows: int) -> None:
    box = Outbox(path)
    for start in range(0, rows, BATCH):
        box.reject(entries(min(BATCH, rows - start)), "integer out of range")
    box.put(entries(3))  # waiting for the database, not rejected: never listed
    box.close()
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE rejected SET rejected_at = NULL WHERE rowid % {UNTIMED} = 0")
    db.close()


def oldest_first(path: Path) -> list[str]:
    """The rejected ids in the order the commands give them: untimed rows first, by id."""
    db = sqlite3.connect(path)
    try:
        found = db.execute("SELECT id FROM rejected ORDER BY rejected_at NULLS FIRST, id")
        return [row_id for (row_id,) in found]
    finally:
        db.close()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("full") / "outbox.db"
    make_outbox(path, ROWS)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "outbox.db"
    make_outbox(path, 20)
    return path


def bounded(big: Measured, baseline: Measured) -> None:
    assert (big.code, baseline.code) == (0, 0), (big.stderr, baseline.stderr)
    assert big.peak_mib < baseline.peak_mib + HEADROOM_MIB, (big.peak_mib, baseline.peak_mib)


def test_listing_and_exporting_a_full_outbox_holds_a_page_of_rows_at_a_time(
    full: Path, small: Path, tmp_path: Path
) -> None:
    """`list` shows the oldest 50 rows with the total and how to see more; `list --json`
    streams every row's summary, oldest first; `export` writes every row in full to a new
    file (nothing half-written left beside it). Each within HEADROOM_MIB of the same command
    on a 20-row outbox."""
    on_full = {"TIERGATE_OUTBOX_PATH": str(full)}
    on_small = {"TIERGATE_OUTBOX_PATH": str(small)}
    order = oldest_first(full)

    table = measured(tmp_path, "outbox", "list", env=on_full)
    bounded(table, measured(tmp_path, "outbox", "list", env=on_small))
    lines = table.stdout.splitlines()
    assert [line.split()[0] for line in lines[:50]] == order[:50]
    assert f"{ROWS} rejected row(s)" in lines[50]
    assert "3 row(s) waiting" in lines[50]
    assert "showing the oldest 50" in lines[51]
    assert "--limit 0" in lines[51]
    assert len(lines) == 52

    listed = measured(tmp_path, "outbox", "list", "--json", env=on_full)
    bounded(listed, measured(tmp_path, "outbox", "list", "--json", env=on_small))
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == order
    assert all(row["error"] == "integer out of range" and row["size"] > 500 for row in rows)
    assert sum(row["rejected_at"] is None for row in rows) == ROWS // UNTIMED

    exported = tmp_path / "out" / "rejected.jsonl"
    exported.parent.mkdir()
    done = measured(tmp_path, "outbox", "export", str(exported), env=on_full)
    bounded(done, measured(tmp_path, "outbox", "export", str(tmp_path / "s.jsonl"), env=on_small))
    assert f"exported {ROWS} rejected row(s)" in done.stdout
    with exported.open() as file:
        written = [json.loads(line) for line in file]
    assert [line["id"] for line in written] == order
    assert all(line["row"]["id"] == line["id"] for line in written)
    assert os.listdir(exported.parent) == ["rejected.jsonl"]  # no temporary file left


def test_retrying_a_full_outbox_holds_a_page_of_rows_at_a_time(
    full: Path, small: Path, tmp_path: Path
) -> None:
    """`retry` stores all 100,000 rows in a SQLite ledger and empties the rejected table,
    within HEADROOM_MIB of the same command on a 20-row outbox."""
    ledgers = {}
    for name in ("full", "small"):
        ledgers[name] = f"sqlite:///{tmp_path / f'ledger-{name}.db'}"
        upgrade(ledgers[name])
    retried = tmp_path / "retried.db"
    shutil.copy(full, retried)
    small_copy = tmp_path / "small.db"
    shutil.copy(small, small_copy)

    on_full = {"TIERGATE_OUTBOX_PATH": str(retried), "TIERGATE_DATABASE_URL": ledgers["full"]}
    on_small = {"TIERGATE_OUTBOX_PATH": str(small_copy), "TIERGATE_DATABASE_URL": ledgers["small"]}
    done = measured(tmp_path, "outbox", "retry", env=on_full)
    bounded(done, measured(tmp_path, "outbox", "retry", env=on_small))
    assert f"{ROWS} row(s) stored" in done.stdout
    ledger = sqlite3.connect(tmp_path / "ledger-full.db")
    (stored,) = ledger.execute("SELECT count(*) FROM ledger_requests").fetchone()
    ledger.close()
    assert stored == ROWS
    box = Outbox(retried)
    assert (box.size, box.rejected_size) == (3, 0)
    box.close()


def test_dropping_a_full_outbox_beside_a_gateway_deletes_in_batches(
    full: Path, small: Path, tmp_path: Path
) -> None:
    """`drop --all --yes` on the outbox a gateway holds open deletes all 100,000 rows, within
    HEADROOM_MIB of the same command on a 20-row outbox, a batch a transaction: the WAL beside
    the file stays under its limit (before: one transaction, a WAL as large as the rows
    dropped, 109 MiB here, on the disk the outbox's bound leaves little of)."""
    dropped, small_copy = tmp_path / "dropped.db", tmp_path / "small.db"
    shutil.copy(full, dropped)
    shutil.copy(small, small_copy)
    gateway = Outbox(dropped)  # as a running gateway holds it: the WAL outlives the command
    try:
        gone = measured(tmp_path, "outbox", "drop", "--all", "--yes", env=outbox_env(dropped))
        baseline = measured(
            tmp_path, "outbox", "drop", "--all", "--yes", env=outbox_env(small_copy)
        )
        bounded(gone, baseline)
        assert f"dropped {ROWS} rejected row(s)" in gone.stdout
        assert Path(f"{dropped}-wal").stat().st_size <= WAL_LIMIT_BYTES
        gateway.refresh()
        assert (gateway.size, gateway.rejected_size) == (3, 0)
    finally:
        gateway.close()


def outbox_env(path: Path) -> dict[str, str]:
    return {"TIERGATE_OUTBOX_PATH": str(path)}

"""The write-ahead journal on its own: on disk when its future is done, group commit, forgetting
what reached the database, and recovery of a killed process's journal (a real process, killed
with SIGKILL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.journal import INTERRUPTED, Journal, recover
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from tests.ledger.test_faults import entry, ledger_rows

REPO = Path(__file__).resolve().parents[2]


def on_disk(path: Path) -> dict[str, dict[str, object]]:
    """What another process reading the journal file finds: id → entry JSON."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT id, payload FROM journal").fetchall()
    finally:
        connection.close()
    return {rid: json.loads(payload) for rid, payload in rows}


async def test_an_entry_is_on_disk_once_its_future_is_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.start()
    row = entry(1)
    await journal.append(row)
    assert on_disk(journal.path) == {row.id: row.to_json()}
    # A stream's opening entry is replaced by its real row at the end: one entry per id.
    finished = dataclasses.replace(row, completion_tokens=99)
    await journal.append(finished)
    assert on_disk(journal.path) == {row.id: finished.to_json()}
    assert journal.backlog == 1
    await journal.aclose()
    assert journal.path.exists()  # not forgotten: kept for the next start to recover


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.start()
    rows = [entry(n) for n in range(200)]
    await asyncio.gather(*(journal.append(row) for row in rows))
    assert set(on_disk(journal.path)) == {row.id for row in rows}
    assert 1 <= journal.commits < 50  # group commit: far fewer commits than appends
    journal.forget(row.id for row in rows)
    assert journal.backlog == 0
    await journal.aclose()
    assert not journal.path.exists()  # empty at a clean stop: removed with its lock file
    assert list((tmp_path / "journal").iterdir()) == []


async def test_a_writer_forgets_what_reached_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    metrics = Metrics()
    journal = Journal(tmp_path / "journal")
    writer = LedgerWriter(
        make_engine(url), Outbox(tmp_path / "outbox.db"), metrics, journal=journal
    )
    writer.start()
    rows = [entry(n) for n in range(30)]
    written = [writer.record(row) for row in rows]
    assert all(w is not None for w in written)
    await asyncio.gather(*(w for w in written if w is not None))
    assert set(on_disk(journal.path)) == {row.id for row in rows}
    await writer.flush()
    assert journal.backlog == 0
    assert metrics.registry.get_sample_value("tiergate_ledger_journal_rows") == 0
    await writer.aclose()
    assert not journal.path.exists()
    assert sorted(rid for rid, _ in ledger_rows(url)) == sorted(row.id for row in rows)


CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, sys
    from pathlib import Path
    from gateway.ledger.journal import INTERRUPTED, Journal
    from tests.ledger.test_faults import entry

    async def main() -> None:
        journal = Journal(Path(sys.argv[1]))
        journal.start()
        opened = dataclasses.replace(entry(1), status=499, error_class=INTERRUPTED)
        await journal.append(opened)
        await journal.append(entry(2))
        print("journaled", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until killed

    asyncio.run(main())
    """
)


def test_recover_takes_only_the_journals_of_dead_processes(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "journaled"
        outbox = Outbox(tmp_path / "outbox.db")
        assert recover(directory, outbox) == 0  # alive: its journal is locked
        assert outbox.size == 0
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    assert recover(directory, outbox) == 2
    rows = {row.id: row for row in outbox.peek(10)}
    assert rows[entry(1).id].status == 499
    assert rows[entry(1).id].error_class == INTERRUPTED
    assert rows[entry(2).id] == entry(2)
    assert list(directory.iterdir()) == []  # the dead journal is gone
    assert recover(directory, outbox) == 0  # and nothing is recovered twice
    outbox.close()

"""The write-ahead journal on its own: on disk when its future is done, group commit, forgetting
what reached the database, and recovery of a killed process's journal (a real process, killed
with SIGKILL)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import orjson

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.journal import IDLE_ROTATE_BYTES, INTERRUPTED, Journal
from gateway.ledger.journal_recovery import recover, recover_rows
from gateway.ledger.outbox import Outbox
from gateway.ledger.streamed import Streamed
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from tests.ledger.test_faults import entry, ledger_rows

REPO = Path(__file__).resolve().parents[2]


def lines(path: Path) -> list[LedgerEntry]:
    """What another process reading the journal segment finds, line by line."""
    return [LedgerEntry.from_json(orjson.loads(line)) for line in path.read_bytes().splitlines()]


async def test_an_entry_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.start()
    row = entry(1)
    assert journal.append(row) is None  # nothing to wait for: write() has returned
    assert lines(journal.path) == [row]
    # A stream's opening entry, then its real row: the last line of an id wins.
    finished = dataclasses.replace(row, completion_tokens=99)
    journal.append(finished)
    assert lines(journal.path) == [row, finished]
    assert journal.backlog == 1
    await journal.aclose()
    assert journal.path.exists()  # not forgotten: kept for the next start to recover


async def test_segments_go_once_their_rows_are_forgotten(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    journal = Journal(directory, segment_bytes=2_000)
    journal.start()
    rows = [entry(n) for n in range(20)]
    for row in rows:
        journal.append(row)
    segments = sorted(directory.glob("*.jsonl"))
    assert len(segments) > 3  # about two rows per segment
    journal.forget(row.id for row in rows[:10])
    left = sorted(directory.glob("*.jsonl"))
    assert segments[0] not in left
    assert journal.path in left
    kept = [e.id for path in left for e in lines(path)]
    assert {row.id for row in rows[10:]} <= set(kept)
    journal.forget(row.id for row in rows[10:])
    assert sorted(directory.glob("*.jsonl")) == [journal.path]
    assert journal.backlog == 0
    await journal.aclose()
    assert list(directory.iterdir()) == []  # nothing left: the lock file goes too


async def test_full_sync_shares_one_fdatasync_among_concurrent_appends(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", sync="full")
    journal.start()
    rows = [entry(n) for n in range(200)]
    syncer = journal._syncer
    assert syncer is not None
    # The sync thread is kept from taking the queue until every append is in it (the lock is
    # re-entrant for this thread, as appends take it too): the 200 appends arrive while one
    # sync is due, as concurrent requests do, without depending on how fast that thread runs.
    with syncer.wake:
        synced = [journal.append(row) for row in rows]
    await asyncio.gather(*(s for s in synced if s is not None))
    assert len([s for s in synced if s is not None]) == len(rows)
    assert journal.syncs == 1  # group commit: one fdatasync for all of them
    assert [e.id for e in lines(journal.path)] == [row.id for row in rows]
    journal.forget(row.id for row in rows)
    await journal.aclose()
    assert list((tmp_path / "journal").iterdir()) == []


async def test_a_writer_forgets_what_reached_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    metrics = Metrics()
    journal = Journal(tmp_path / "journal")
    # A generous insert deadline: on a loaded machine the first insert can pass the default
    # 5 s, and the rows then go to the outbox, which is another test's behaviour.
    writer = LedgerWriter(
        make_engine(url),
        Outbox(tmp_path / "outbox.db"),
        metrics,
        journal=journal,
        insert_timeout_s=120,
    )
    writer.start()
    rows = [entry(n) for n in range(30)]
    assert [writer.record(row) for row in rows] == [None] * len(rows)  # written already
    assert [e.id for e in lines(journal.path)] == [row.id for row in rows]
    await writer.flush()
    assert journal.backlog == 0
    assert metrics.registry.get_sample_value("tiergate_ledger_journal_rows") == 0
    await writer.aclose()
    assert list((tmp_path / "journal").iterdir()) == []
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
        journal.append(opened)
        journal.append(entry(2))
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
    with (directory / next(p.name for p in directory.glob("*.jsonl"))).open("ab") as segment:
        segment.write(b'{"id": "cut short by the kil')  # a line the kill interrupted
    assert recover(directory, outbox) == 2
    rows = {row.id: row for row in outbox.peek(10)}
    assert rows[entry(1).id].status == 499
    assert rows[entry(1).id].error_class == INTERRUPTED
    assert rows[entry(2).id] == entry(2)
    assert list(directory.iterdir()) == []  # the dead journal is gone
    assert recover(directory, outbox) == 0  # and nothing is recovered twice
    outbox.close()


async def test_an_idle_journal_starts_a_fresh_segment(tmp_path: Path) -> None:
    """Once every row written has been forgotten, a segment past IDLE_ROTATE_BYTES is replaced
    by an empty one: a restart has almost nothing to replay."""
    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.start()
    rows = [entry(n) for n in range(IDLE_ROTATE_BYTES // 500)]
    for row in rows:
        journal.append(row)
    first = journal.path
    assert first.stat().st_size >= IDLE_ROTATE_BYTES
    journal.forget(row.id for row in rows[:-1])
    assert journal.path == first  # one row still on its way: nothing moves
    journal.forget([rows[-1].id])
    assert journal.path != first
    assert sorted(directory.glob("*.jsonl")) == [journal.path]
    assert journal.path.stat().st_size == 0
    await journal.aclose()


async def test_a_row_whose_settlement_has_not_landed_stays_and_recovery_names_it(
    tmp_path: Path,
) -> None:
    """A budgeted request's row is forgotten only once it is stored and its settlement landed;
    a recovery names the ended requests whose settlement had not landed, and no other: not one
    whose settlement marker is in a later segment than its row (that segment stays while the
    row's does), nor a stored row that shares a segment with one still pending."""
    directory = tmp_path / "journal"
    journal = Journal(directory, segment_bytes=2_000)
    journal.start()
    rows = [entry(n) for n in range(3)]
    for row in rows:
        journal.append(row)
    journal.unsettled(rows[0].id)
    journal.unsettled(rows[1].id)
    journal.forget(row.id for row in rows)  # all three stored
    assert journal.backlog == 2  # the unsettled two stay

    def busy(first: int) -> None:  # rows that come and go: the segments rotate past
        for n in range(first, first + 10):
            journal.append(entry(n))
            journal.forget([entry(n).id])

    busy(3)
    journal.settled([rows[1].id])  # its marker in a later segment than its row
    assert journal.backlog == 1
    busy(13)
    assert journal.backlog == 1
    await journal.aclose()  # (as a killed process leaves it: the files stay)

    outbox = Outbox(tmp_path / "outbox.db")
    recovered = recover_rows(directory, outbox)
    outbox.close()
    assert rows[0] in recovered.rows
    assert recovered.unsettled == {rows[0].id}


async def test_recovery_prices_an_interrupted_stream_with_its_last_progress(
    tmp_path: Path,
) -> None:
    """A stream's opening entry (interrupted, the prompt alone) then its progress lines: the
    recovered row is the opening entry with the last progress applied (output tokens, cost,
    latency; still estimated). A stream whose real row came after its progress keeps the real
    row; a progress line of an id the journal holds no entry of is not written."""
    directory = tmp_path / "journal"
    journal = Journal(directory, segment_bytes=2_000)  # the lines span segments
    journal.start()
    opening = [
        dataclasses.replace(
            entry(n),
            status=499,
            error_class=INTERRUPTED,
            completion_tokens=0,
            usage_estimated=True,
            latency_ms=1.0,
        )
        for n in range(2)
    ]
    for row in opening:
        journal.append(row)

    def progress(row: LedgerEntry, tokens: int) -> Streamed:
        cost = Decimal(row.prompt_tokens + 4 * tokens) / 1_000_000
        return Streamed(row.id, tokens, 5.0 + tokens, cost, "policy", cost * 2)

    for tokens in (32, 64, 96):
        for row in opening:
            journal.streamed(progress(row, tokens))
            journal.append(entry(100 + tokens))  # other requests' rows between them
    finished = dataclasses.replace(entry(1), completion_tokens=120)
    journal.append(finished)  # the second stream ended: its real row
    journal.streamed(progress(entry(7), 32))  # never opened here: not written
    await journal.aclose()  # (as a killed process leaves it: the files stay)
    assert len(sorted(directory.glob("*.jsonl"))) > 1
    assert entry(7).id not in b"".join(p.read_bytes() for p in directory.glob("*.jsonl")).decode()

    outbox = Outbox(tmp_path / "outbox.db")
    recovered = {row.id: row for row in recover_rows(directory, outbox).rows}
    outbox.close()
    last = progress(opening[0], 96)
    assert recovered[opening[0].id] == dataclasses.replace(
        opening[0],
        completion_tokens=96,
        latency_ms=101.0,
        cost_usd=last.cost_usd,
        baseline_cost_usd=last.baseline_cost_usd,
    )
    assert recovered[finished.id] == finished

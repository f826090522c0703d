"""Recovery of the journals of processes that stopped (``gateway.ledger.journal``): at start,
every journal no living process holds (its lock is free) is moved into the outbox, from where
the writer replays it into the database idempotently, and deleted; the ids among its rows whose
budget settlement had not landed are returned for ``governance.recovered`` to charge. A stream
the stop cut short becomes its interrupted row with its last progress line applied
(``gateway.ledger.streamed``): priced with the output tokens its client had received."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from gateway.ledger.entry import LedgerEntry
from gateway.ledger.journal import INTERRUPTED, SETTLED, UNSETTLED, claim, release, unlink
from gateway.ledger.outbox import Outbox
from gateway.ledger.streamed import STREAMED, Streamed

log = structlog.get_logger("tiergate.ledger")


@dataclass(frozen=True, slots=True)
class Recovered:
    """What the journals of stopped processes held: their rows (now in the outbox), and the ids
    among them of requests that had ended but whose budget settlement had not landed."""

    rows: list[LedgerEntry]
    unsettled: frozenset[str]


def recover(directory: Path, outbox: Outbox) -> int:
    """Move every journal in ``directory`` that no living process holds into ``outbox`` and
    delete it; returns the rows moved. Safe to run while other processes serve (theirs are
    locked) and to repeat after a crash part-way (the outbox keeps one row per id)."""
    return len(recover_rows(directory, outbox).rows)


def recover_rows(directory: Path, outbox: Outbox) -> Recovered:
    """``recover``, returning the rows moved and the ids among them whose settlement had not
    landed (their cost is charged to budgets: ``gateway.governance.recovered``)."""
    if not directory.is_dir():
        return Recovered([], frozenset())
    moved: list[LedgerEntry] = []
    marks: dict[str, set[str]] = {UNSETTLED: set(), SETTLED: set()}
    for lock_path in sorted(directory.glob("journal-*.lock")):
        lock = claim(lock_path)
        if lock is None:
            continue  # a living process's journal
        try:
            stem = lock_path.name.removesuffix(".lock")
            segments = sorted(directory.glob(f"{stem}-*.jsonl"))
            latest: dict[str, LedgerEntry] = {}
            progress: dict[str, Streamed] = {}  # an id's progress since its last row line
            for segment in segments:
                for item in _read(segment, marks):
                    if isinstance(item, Streamed):
                        progress[item.rid] = item
                    else:
                        latest[item.id] = item  # the last line of an id wins
                        progress.pop(item.id, None)
            entries = [_as_it_stood(entry, progress.get(entry.id)) for entry in latest.values()]
            if entries:
                outbox.put(entries)
                interrupted = sum(1 for e in entries if e.error_class == INTERRUPTED)
                log.warning(
                    "ledger_journal_recovered",
                    journal=stem,
                    rows=len(entries),
                    interrupted_streams=interrupted,
                    # of those, streams priced with the output their clients had received
                    streamed=sum(
                        1 for e in entries if e.id in progress and e.error_class == INTERRUPTED
                    ),
                    detail="rows of a process that stopped without writing them; they go to "
                    "the database through the outbox",
                )
            moved += entries
            for segment in segments:
                unlink(segment)
            unlink(lock_path)
        finally:
            release(lock)
    unsettled = (marks[UNSETTLED] - marks[SETTLED]) & {entry.id for entry in moved}
    return Recovered(moved, frozenset(unsettled))


def _as_it_stood(entry: LedgerEntry, progress: Streamed | None) -> LedgerEntry:
    """An id's last row, with the progress noted after it when it is a stream's interrupted
    row (a real row, written at the request's end, stands as it is)."""
    if progress is None or entry.error_class != INTERRUPTED:
        return entry
    return progress.applied(entry)


def _read(segment: Path, marks: dict[str, set[str]]) -> list[LedgerEntry | Streamed]:
    """The entries and progress lines of one segment, in order (the ids of its marker lines
    into ``marks``); a line cut short by the crash (the last one) is skipped."""
    entries: list[LedgerEntry | Streamed] = []
    for line in segment.read_bytes().splitlines():
        try:
            data = orjson.loads(line)
            if isinstance(data, dict) and len(data) == 1:
                ((field, rid),) = data.items()
                if field in marks:
                    marks[field].add(str(rid))
                    continue
            if isinstance(data, dict) and STREAMED in data:
                entries.append(Streamed.read(data))
                continue
            entries.append(LedgerEntry.from_json(data))
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
            log.warning("ledger_journal_line_skipped", journal=segment.name, bytes=len(line))
    return entries

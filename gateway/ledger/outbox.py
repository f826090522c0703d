"""The local outbox: where ledger rows wait while the database is unreachable.

A SQLite file in WAL mode with ``synchronous=FULL`` (a row the gateway was told is safe survives
a power cut), keyed by the request id, so writing a row twice keeps one and replaying it into
the ledger (``INSERT … ON CONFLICT DO NOTHING`` there too) never duplicates anything.
Its methods run on one thread at a time (the writer's), never on the event loop; ``size``,
``rejected_size`` and ``used_bytes`` are plain values the loop may read, as of the last call
(``refresh`` re-reads).

Rows the database refused for their content (a value it cannot store, a constraint) go to the
``rejected`` table, kept for a person: ``tiergate outbox`` lists, exports, retries and drops
them (``gateway.ledger.rejected``), reading them a page at a time (``iter_rejected``, along an
index on ``(rejected_at, id)``): a full outbox is hundreds of MiB of rows, and the command runs
in the gateway's container, under its memory limit.

The row counts are kept in the file (the ``tally`` table, moved by triggers on every insert and
delete, whoever makes it: another worker of ``serve --workers``, the ``tiergate outbox``
command, an older tiergate), so a write reads two numbers instead of counting every waiting row;
each open recounts once, in case anything ever moved the rows without the triggers.

``used_bytes`` is the space the file's live pages take (waiting rows, rejected rows, schema):
pages freed by a replay are reused by the next rows, so the file on disk never grows much past
the largest ``used_bytes`` it had (``gateway.ledger.capacity`` bounds it).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.ledger.entry import LedgerEntry

WAL_LIMIT_BYTES = 16 * 1024 * 1024
BUSY_TIMEOUT_S = 5.0  # another process (a worker, the CLI) holding the write lock: wait
OPERATOR_BUSY_TIMEOUT_S = 30.0  # a person's command waits longer than the writer's thread
PAGE = 500  # rejected rows read at once (about 0.5 MiB)
DROP_BATCH = 2_000  # rejected rows deleted per transaction: the write lock is held briefly

_COLUMNS = "SELECT id, rejected_at, error, payload FROM rejected"
# Oldest first: rows from a tiergate that did not record the time (NULL), by id, then the others.
_UNTIMED_PAGE = f"{_COLUMNS} WHERE rejected_at IS NULL AND id > ? ORDER BY id LIMIT ?"
_TIMED_PAGE = f"{_COLUMNS} WHERE (rejected_at, id) > (?, ?) ORDER BY rejected_at, id LIMIT ?"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, payload TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejected "
    "(id TEXT PRIMARY KEY, payload TEXT NOT NULL, error TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tally (name TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS {table}_{verb} AFTER {event} ON {table} "
        f"BEGIN UPDATE tally SET n = n {sign} 1 WHERE name = '{table}'; END"
        for table in ("outbox", "rejected")
        for verb, event, sign in (("in", "INSERT", "+"), ("out", "DELETE", "-"))
    ),
)


class OutboxMissing(FileNotFoundError):
    """No outbox file where one was expected (``Outbox.existing``)."""


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row the database refused, as the outbox keeps it."""

    id: str
    rejected_at: datetime | None  # None: set aside by a tiergate that did not record when
    error: str  # the database's answer (its first line)
    payload: str  # the row, as JSON text

    @property
    def size(self) -> int:
        return len(self.payload.encode())

    def entry(self) -> LedgerEntry:
        return LedgerEntry.from_json(json.loads(self.payload))

    def to_json(self) -> dict[str, Any]:
        when = self.rejected_at.isoformat() if self.rejected_at is not None else None
        return {"id": self.id, "rejected_at": when, "error": self.error, "size": self.size}


class Outbox:
    def __init__(
        self, path: Path, *, create: bool = True, busy_timeout_s: float = BUSY_TIMEOUT_S
    ) -> None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            target: str | Path = path
        elif not path.is_file():
            raise OutboxMissing(path)
        else:
            target = f"file:{path.resolve()}?mode=rw"  # never make one where none was
        self._path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            target,
            check_same_thread=False,
            isolation_level=None,
            timeout=busy_timeout_s,
            uri=not create,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # A REPLACE deletes the row it replaces: count it out too.
        self._db.execute("PRAGMA recursive_triggers=ON")
        # The WAL beside the file shares its disk (and its bound's margin): cut back to this
        # after each checkpoint instead of staying at the largest size it ever reached.
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._size = 0
        self._rejected = 0
        self._bytes = 0
        self._prepare()

    @classmethod
    def existing(cls, path: Path) -> Outbox:
        """The outbox file at ``path`` (a stopped gateway's or a running one's); raises
        ``OutboxMissing`` instead of creating one."""
        return cls(path, create=False, busy_timeout_s=OPERATOR_BUSY_TIMEOUT_S)

    def _prepare(self) -> None:
        """The tables, the counts' triggers, and the counts themselves, in one write
        transaction (a process opening the file beside this one waits for it)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(rejected)")}
            if "rejected_at" not in columns:  # a file from before it was recorded
                self._db.execute("ALTER TABLE rejected ADD COLUMN rejected_at REAL")
            # Pages of rejected rows in order without sorting the table (``iter_rejected``).
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS rejected_order ON rejected (rejected_at, id)"
            )
            self._db.execute(
                "INSERT OR REPLACE INTO tally (name, n) VALUES "
                "('outbox', (SELECT count(*) FROM outbox)), "
                "('rejected', (SELECT count(*) FROM rejected))"
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._measure()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        """Rows waiting for the database."""
        return self._size

    @property
    def rejected_size(self) -> int:
        """Rows the database refused, kept for a person (``tiergate outbox list``)."""
        return self._rejected

    @property
    def used_bytes(self) -> int:
        """Bytes of the file's pages in use (free pages, reused by the next rows, left out)."""
        return self._bytes

    def _measure(self) -> None:
        """Rows waiting, rows rejected and bytes in use, as the file holds them now (other
        processes sharing it, ``serve --workers``, included)."""
        counts = dict(self._db.execute("SELECT name, n FROM tally").fetchall())
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        self._size = int(counts.get("outbox", 0))
        self._rejected = int(counts.get("rejected", 0))
        self._bytes = (int(pages) - int(free)) * int(page_size)

    def refresh(self) -> None:
        """Re-read the counts and ``used_bytes`` (another process may have added or replayed
        rows)."""
        with self._lock:
            self._measure()

    def _write(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """``statement`` for each of ``rows`` in one transaction; the rows it changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = self._db.executemany(statement, rows).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._measure()
        return max(changed, 0)

    def put(self, entries: Iterable[LedgerEntry]) -> None:
        rows = [(e.id, json.dumps(e.to_json())) for e in entries]
        self._write("INSERT OR IGNORE INTO outbox (id, payload) VALUES (?, ?)", rows)

    def reject(self, entries: Iterable[LedgerEntry], error: str) -> None:
        now = time.time()
        rows = [(e.id, json.dumps(e.to_json()), error, now) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO rejected (id, payload, error, rejected_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, "
                    "error = excluded.error, rejected_at = excluded.rejected_at",
                    rows,
                )
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._measure()

    def rejected(self) -> int:
        """Rows in the rejected table now."""
        self.refresh()
        return self._rejected

    def rejected_rows(self, ids: Sequence[str]) -> list[RejectedRow]:
        """The rejected rows of ``ids`` (those there), oldest first."""
        query = f"{_COLUMNS} WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY rejected_at, id"
        with self._lock:
            found = self._db.execute(query, tuple(ids)).fetchall()
        return [_rejected_row(*row) for row in found]

    def iter_rejected(self, page: int = PAGE) -> Iterator[RejectedRow]:
        """Every rejected row, oldest first, read ``page`` rows at a time: each page is its own
        short read, so a gateway writing the file goes on between them, and rows removed or
        re-rejected behind the last page read do not shift the next."""
        after_id = ""
        while True:
            with self._lock:
                found = self._db.execute(_UNTIMED_PAGE, (after_id, page)).fetchall()
            yield from (_rejected_row(*row) for row in found)
            if len(found) < page:
                break
            after_id = found[-1][0]
        after: tuple[float, str] = (-math.inf, "")
        while True:
            with self._lock:
                found = self._db.execute(_TIMED_PAGE, (*after, page)).fetchall()
            yield from (_rejected_row(*row) for row in found)
            if len(found) < page:
                return
            after = (found[-1][1], found[-1][0])

    def rejected_bytes(self) -> int:
        """The rejected rows' size (their JSON, in bytes), counted by SQLite."""
        with self._lock:
            (total,) = self._db.execute(
                "SELECT ifnull(sum(length(CAST(payload AS BLOB))), 0) FROM rejected"
            ).fetchone()
        return int(total)

    def settle_rejected(self, rows: Iterable[RejectedRow]) -> int:
        """These rejected rows are in the ledger now: out of the table (each only as it was
        read: one rejected again since, with another payload, stays). The rows removed."""
        statement = "DELETE FROM rejected WHERE id = ? AND payload = ?"
        return self._write(statement, [(r.id, r.payload) for r in rows])

    def rerejected(self, row: RejectedRow, error: str) -> None:
        """The database refused ``row`` again: keep it, with its new error."""
        statement = "UPDATE rejected SET error = ? WHERE id = ? AND payload = ?"
        self._write(statement, [(error, row.id, row.payload)])

    def drop_rejected(self, ids: Sequence[str] | None) -> int:
        """Delete the rejected rows ``ids`` (None: all of them) for good; how many went. All
        of them go ``DROP_BATCH`` rows a transaction, so a gateway writing the same file waits
        for the lock a moment at a time, never for the whole table."""
        if ids is not None:
            return self._write("DELETE FROM rejected WHERE id = ?", [(i,) for i in ids])
        statement = "DELETE FROM rejected WHERE id IN (SELECT id FROM rejected LIMIT ?)"
        dropped = 0
        while (batch := self._write(statement, [(DROP_BATCH,)])) > 0:
            dropped += batch
        return dropped

    def peek(self, limit: int) -> list[LedgerEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            if len(rows) < limit:
                # All there is. Another process sharing the file (``serve --workers``) may have
                # replayed rows this one counted: keep the size (and its gauge) true.
                self._measure()
        return [LedgerEntry.from_json(json.loads(payload)) for (payload,) in rows]

    def remove(self, ids: Iterable[str]) -> None:
        self._write("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _rejected_row(row_id: str, at: float | None, error: str, payload: str) -> RejectedRow:
    when = datetime.fromtimestamp(at, UTC) if at is not None else None
    return RejectedRow(id=row_id, rejected_at=when, error=error, payload=payload)

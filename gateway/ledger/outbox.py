"""The local outbox: where ledger rows wait while the database is unreachable.

A SQLite file in WAL mode with ``synchronous=FULL`` (a row the gateway was told is safe survives
a power cut), keyed by the request id, so writing a row twice keeps one and replaying it into
the ledger (``INSERT … ON CONFLICT DO NOTHING`` there too) never duplicates anything.
Its methods run on one thread at a time (the writer's), never on the event loop; ``size`` and
``used_bytes`` are plain values the loop may read, as of the last call (``refresh`` re-reads).

``used_bytes`` is the space the file's live pages take (waiting rows, rejected rows, schema):
pages freed by a replay are reused by the next rows, so the file on disk never grows much past
the largest ``used_bytes`` it had (``gateway.ledger.capacity`` bounds it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from gateway.ledger.entry import LedgerEntry

WAL_LIMIT_BYTES = 16 * 1024 * 1024


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # The WAL beside the file shares its disk (and its bound's margin): cut back to this
        # after each checkpoint instead of staying at the largest size it ever reached.
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, payload TEXT NOT NULL)"
        )
        # Rows the database refused for their content: kept for a person to look at.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected "
            "(id TEXT PRIMARY KEY, payload TEXT NOT NULL, error TEXT NOT NULL)"
        )
        self._size = 0
        self._bytes = 0
        self._measure()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    @property
    def used_bytes(self) -> int:
        """Bytes of the file's pages in use (free pages, reused by the next rows, left out)."""
        return self._bytes

    def _measure(self) -> None:
        """Rows waiting and bytes in use, as the file holds them now (other processes sharing
        it, ``serve --workers``, included)."""
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        self._size = int(count)
        self._bytes = (int(pages) - int(free)) * int(page_size)

    def refresh(self) -> None:
        """Re-read ``size`` and ``used_bytes`` (another process may have added or replayed
        rows)."""
        with self._lock:
            self._measure()

    def put(self, entries: Iterable[LedgerEntry]) -> None:
        rows = [(e.id, json.dumps(e.to_json())) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO outbox (id, payload) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
            self._measure()

    def reject(self, entries: Iterable[LedgerEntry], error: str) -> None:
        rows = [(e.id, json.dumps(e.to_json()), error) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO rejected (id, payload, error) VALUES (?, ?, ?)", rows
            )
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
            self._db.execute("COMMIT")
            self._measure()

    def rejected(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM rejected").fetchone()
        return int(count)

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
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
            self._measure()

    def close(self) -> None:
        with self._lock:
            self._db.close()

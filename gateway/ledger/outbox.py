"""The local outbox: where ledger rows wait while the database is unreachable.

A SQLite file in WAL mode with ``synchronous=FULL`` (a row the gateway was told is safe survives
a power cut), keyed by the request id, so writing a row twice keeps one and replaying it into
the ledger (``INSERT … ON CONFLICT DO NOTHING`` there too) never duplicates anything.
Used from one thread at a time (the writer's), never from the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from gateway.ledger.entry import LedgerEntry


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, payload TEXT NOT NULL)"
        )
        # Rows the database refused for their content: kept for a person to look at.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected "
            "(id TEXT PRIMARY KEY, payload TEXT NOT NULL, error TEXT NOT NULL)"
        )
        self._size = self._count()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    def _count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(count)

    def put(self, entries: Iterable[LedgerEntry]) -> None:
        rows = [(e.id, json.dumps(e.to_json())) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO outbox (id, payload) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
            self._size = self._count()

    def reject(self, entries: Iterable[LedgerEntry], error: str) -> None:
        rows = [(e.id, json.dumps(e.to_json()), error) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO rejected (id, payload, error) VALUES (?, ?, ?)", rows
            )
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
            self._db.execute("COMMIT")
            self._size = self._count()

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
                self._size = len(rows)
        return [LedgerEntry.from_json(json.loads(payload)) for (payload,) in rows]

    def remove(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
            self._size = self._count()

    def close(self) -> None:
        with self._lock:
            self._db.close()

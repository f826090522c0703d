"""The write-ahead journal: a request's ledger row is on local disk before the client has the
last byte of its answer, so a killed process (SIGKILL, the OOM killer, a crash) loses none.

One SQLite file per process (``journal-<pid>-<token>.db`` in the journal directory, WAL mode),
held with an exclusive ``flock`` on ``<file>.lock`` for the process's life. The request path
appends entries and awaits a future; a committer thread writes every append waiting at that
moment in one transaction (group commit: concurrent requests share a commit) and then resolves
their futures. A stream appends its entry when it opens (already in the shape of an interrupted
row: status 499, ``error_class = interrupted``, usage estimated from the prompt) and replaces it
with the real row at its end. The ledger writer forgets entries once their rows are in the
database or the outbox.

At start, ``recover`` moves every journal no living process holds (its ``flock`` is free) into
the outbox, from where the writer replays it into the database idempotently, and deletes it.

Durability: ``sync="normal"`` (the default) survives the process being killed (a committed
WAL frame is in the operating system's page cache); ``sync="full"`` also survives a power cut,
at an fsync per group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import structlog

from gateway.ledger.entry import LedgerEntry
from gateway.ledger.outbox import Outbox

log = structlog.get_logger("tiergate.ledger")

Sync = Literal["normal", "full"]
INTERRUPTED = "interrupted"  # the error class of a row a stream's opening entry became


@dataclass(frozen=True, slots=True)
class _Put:
    entry: LedgerEntry
    future: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class _Forget:
    ids: tuple[str, ...]


_Op = _Put | _Forget | None  # None: stop


class Journal:
    """This process's journal. ``append`` and ``forget`` are called on the event loop."""

    def __init__(self, directory: Path, *, sync: Sync = "normal") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"journal-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"
        lock = _claim(self._path)
        if lock is None:  # a fresh name: nobody else can hold it
            raise RuntimeError(f"cannot lock the new journal {self._path}")
        self._lock = lock
        self._db = _connect(self._path, sync)
        self._ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Entries appended and not yet forgotten, with when each first arrived (monotonic): the
        # backlog and its oldest entry's age, for the metrics.
        self._pending: dict[str, float] = {}
        self.commits = 0  # group commits made
        self.failures = 0  # commits that failed (the rows stay in memory on their way)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def oldest_age_s(self) -> float:
        for first in self._pending.values():
            return time.monotonic() - first
        return 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="ledger-journal", daemon=True)
        self._thread.start()

    def append(self, entry: LedgerEntry) -> asyncio.Future[None]:
        """Write ``entry`` (replacing an earlier one of the same id); the future is done once
        it is on disk. Never raises: a journal that cannot write logs it and resolves anyway
        (the row is still on its way to the database)."""
        assert self._loop is not None, "Journal.start() was not called"
        future = self._loop.create_future()
        self._pending.setdefault(entry.id, time.monotonic())
        self._ops.put(_Put(entry, future))
        return future

    def forget(self, ids: Iterable[str]) -> None:
        """These rows are in the database or the outbox: their entries may go."""
        done = tuple(ids)
        for rid in done:
            self._pending.pop(rid, None)
        if done:
            self._ops.put(_Forget(done))

    async def aclose(self) -> None:
        """Write what is queued, stop the thread, and delete the file if nothing is left in it
        (what is left is recovered at the next start)."""
        if self._thread is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        (left,) = self._db.execute("SELECT count(*) FROM journal").fetchone()
        self._db.close()
        if not left:
            _remove(self._path)
        _release(self._lock)

    # --- the committer thread ---------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            ops = [self._ops.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    ops.append(self._ops.get_nowait())
            stopping = any(op is None for op in ops)
            self._commit([op for op in ops if op is not None])

    def _commit(self, ops: list[_Put | _Forget]) -> None:
        futures = [op.future for op in ops if isinstance(op, _Put)]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for op in ops:
                if isinstance(op, _Put):
                    entry = op.entry
                    self._db.execute(
                        "INSERT OR REPLACE INTO journal (id, payload) VALUES (?, ?)",
                        (entry.id, json.dumps(entry.to_json())),
                    )
                else:
                    self._db.executemany(
                        "DELETE FROM journal WHERE id = ?", [(rid,) for rid in op.ids]
                    )
            self._db.execute("COMMIT")
            self.commits += 1
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            log.critical(
                "ledger_journal_unwritable",
                error=f"{type(exc).__name__}: {exc}",
                journal=str(self._path),
                detail="rows still go to the database, but a crash now could lose them; "
                "free disk space or fix the journal directory's permissions",
            )
        if futures and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self._loop.call_soon_threadsafe(_resolve, futures)


def recover(directory: Path, outbox: Outbox) -> int:
    """Move every journal in ``directory`` that no living process holds into ``outbox`` and
    delete it; returns the rows moved. Safe to run while other processes serve (theirs are
    locked) and to repeat after a crash part-way (the outbox keeps one row per id)."""
    if not directory.is_dir():
        return 0
    moved = 0
    for path in sorted(directory.glob("journal-*.db")):
        lock = _claim(path)
        if lock is None:
            continue  # a living process's journal
        try:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                rows = db.execute("SELECT payload FROM journal").fetchall()
            except sqlite3.OperationalError:
                rows = []  # created and killed before its table existed
            finally:
                db.close()
            entries = [LedgerEntry.from_json(json.loads(payload)) for (payload,) in rows]
            if entries:
                outbox.put(entries)
                interrupted = sum(1 for e in entries if e.error_class == INTERRUPTED)
                log.warning(
                    "ledger_journal_recovered",
                    journal=str(path),
                    rows=len(entries),
                    interrupted_streams=interrupted,
                    detail="rows of a process that stopped without writing them; they go to "
                    "the database through the outbox",
                )
            moved += len(entries)
            _remove(path)
        finally:
            _release(lock)
    return moved


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _connect(path: Path, sync: Sync) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    db.execute("CREATE TABLE IF NOT EXISTS journal (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
    return db


def _claim(path: Path) -> IO[bytes] | None:
    """An exclusive lock on ``<path>.lock``, or None while another process holds it."""
    handle = open(f"{path}.lock", "ab")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _release(handle: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")

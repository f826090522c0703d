"""The write-ahead journal: a request's ledger row is on local disk before the client has the
last byte of its answer, so a killed process (SIGKILL, the OOM killer, a crash) loses none.

An append-only file per process, in segments (``journal-<pid>-<token>-<n>.jsonl`` in the journal
directory), held with an exclusive ``flock`` on ``journal-<pid>-<token>.lock`` for the process's
life. Each entry is one JSON line, written with one ``write()`` on the event loop's thread as the
request ends (a few microseconds: no thread hand-off, no page rewrite). A request also appends
an entry as each try reaches its backend (already shaped as an interrupted row: status 499,
``error_class = interrupted``, usage estimated from the prompt), so one killed while a backend
works on it has its row; its real row comes at the end; the last line of an id wins. A stream
also appends progress lines as it goes (``streamed``: the output sent so far, priced; coalesced
by the pipeline), which recovery applies to its interrupted row (``gateway.ledger.streamed``). The
ledger writer ``forget``s entries once their rows are in the database or the outbox; a segment
whose entries are all forgotten is deleted (a new one starts every
``SEGMENT_BYTES``, or sooner when nothing is pending).

Durability: ``sync="normal"`` (the default): once ``write()`` returns, the line is in the
operating system's page cache and survives the process being killed; ``append`` returns None
(nothing to wait for). ``sync="full"`` also survives a power cut: ``append`` returns a future
done after an ``fdatasync`` that covers the line; a thread runs them, one for every append
waiting at that moment (group commit: concurrent requests share a sync).

A request that counts against budgets and settles in Redis is ``unsettled`` once it has ended (a
marker line, ``{"unsettled": id}``) until its settlement (its cost added to its budgets' spend
counters, ``governance.gate``) has landed (``settled``: ``{"settled": id}``). Its entries are
forgotten only once its row is stored and its settlement landed, so a killed process's journal
tells which answered rows' costs never reached the counters (``journal_recovery`` reads them,
``governance.recovered`` charges them). A segment holding a later line of an id goes only after
the segments holding its earlier lines have gone, so no file left behind holds an id's earlier
lines without its later ones (an ``unsettled`` marker without its ``settled``, an opening entry
without its real row).

At start, ``journal_recovery`` moves every journal that no living process holds (its lock is
free) into the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import structlog

from gateway.ledger.entry import LedgerEntry
from gateway.ledger.streamed import Streamed

log = structlog.get_logger("tiergate.ledger")

Sync = Literal["normal", "full"]
INTERRUPTED = "interrupted"  # the error class of a row a stream's opening entry became
# A new segment every SEGMENT_BYTES (about 1,300 rows), or once every row was forgotten and the
# segment holds IDLE_ROTATE_BYTES: a segment whose rows all reached the database is deleted,
# so what a restart replays (idempotently) is little more than what was really in flight.
SEGMENT_BYTES = 1024 * 1024
IDLE_ROTATE_BYTES = 64 * 1024


UNSETTLED = "unsettled"  # a marker line's one field: a request whose settlement is on its way
SETTLED = "settled"  # ... and one whose settlement landed (or was given up)


def encode(entry: LedgerEntry) -> bytes:
    """One journal line (``LedgerEntry.from_json`` reads it back)."""
    return orjson.dumps(entry.to_json()) + b"\n"


@dataclass(slots=True)
class _Syncer:
    """``sync="full"``: fdatasync on a thread, one for all the appends waiting for it."""

    loop: asyncio.AbstractEventLoop
    waiting: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)  # rotated-out descriptors to sync, close
    wake: threading.Condition = field(default_factory=threading.Condition)
    stopping: bool = False
    thread: threading.Thread | None = None
    syncs: int = 0  # fdatasync passes made

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="ledger-journal-sync", daemon=True)
        self.thread.start()

    def after(self, fd: int) -> asyncio.Future[None]:
        future = self.loop.create_future()
        with self.wake:
            self.waiting.append((fd, future))
            self.wake.notify()
        return future

    def retire(self, fd: int) -> None:
        with self.wake:
            self.retired.append(fd)
            self.wake.notify()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread is not None:
            self.thread.join()

    def _run(self) -> None:
        while True:
            with self.wake:
                self.wake.wait_for(lambda: self.waiting or self.retired or self.stopping)
                waiting, self.waiting = self.waiting, []
                retired, self.retired = self.retired, []
                stopping = self.stopping
            for fd in sorted({fd for fd, _ in waiting} | set(retired)):
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
            if waiting:
                self.syncs += 1
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if waiting:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    self.loop.call_soon_threadsafe(_resolve, [f for _, f in waiting])
            if stopping and not waiting and not retired:
                return


class Journal:
    """This process's journal. Every method is called on the event loop's thread."""

    def __init__(
        self, directory: Path, *, sync: Sync = "normal", segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._stem = f"journal-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a name ``recover`` does not look at, then renamed (the lock stays with
        # the file): another process's ``recover`` never sees this journal unlocked.
        hidden = directory / f".{self._stem}.lock"
        lock = claim(hidden)
        if lock is None:  # a fresh name: nobody else can hold it
            raise RuntimeError(f"cannot lock the new journal {self._stem} in {directory}")
        os.rename(hidden, directory / f"{self._stem}.lock")
        self._lock = lock
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._seq = 0
        self._size = 0
        self._fd = self._open(0)
        self._syncer: _Syncer | None = None
        # Entries written and not yet forgotten: id → the segments holding a line of it; per
        # segment, how many ids still need it; per id, when it was first written (monotonic).
        self._where: dict[str, list[int]] = {}
        self._live: dict[int, int] = {0: 0}
        self._waits: dict[int, list[int]] = {}  # segment → segments released once it is gone
        self._pending: dict[str, float] = {}
        # ids whose settlement has not landed; of those, the ones whose row is already stored
        self._unsettled: set[str] = set()
        self._stored: set[str] = set()
        self.failures = 0  # appends that could not be written (the row still goes on)

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self._segment(self._seq)

    @property
    def syncs(self) -> int:
        """fdatasync passes (``sync="full"``): fewer than appends when they overlap."""
        return self._syncer.syncs if self._syncer is not None else 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def oldest_age_s(self) -> float:
        for first in self._pending.values():
            return time.monotonic() - first
        return 0.0

    def start(self) -> None:
        if self._sync == "full":
            self._syncer = _Syncer(asyncio.get_running_loop())
            self._syncer.start()

    def append(self, entry: LedgerEntry) -> asyncio.Future[None] | None:
        """Write ``entry``. ``sync="normal"``: on disk as far as a killed process goes when this
        returns (None). ``full``: a future, done once it would survive a power cut. Never
        raises: a journal that cannot write logs it, and the row still goes to the database."""
        if not self._write(entry.id, encode(entry)):
            return None
        # Registered before a rotation retires this descriptor: its sync comes first.
        synced = self._syncer.after(self._fd) if self._syncer is not None else None
        if self._size >= self._segment_bytes:
            self._rotate()
        return synced

    def streamed(self, progress: Streamed) -> None:
        """A stream's progress (``gateway.ledger.streamed``), after its opening entry (none, or
        forgotten: nothing to add to). Never synced on its own: with ``sync="full"`` the next
        group commit covers it, and a power cut may lose the last few (the row then bills
        less of the stream, never less than its prompt)."""
        if progress.rid in self._where:
            self._line(progress.rid, progress.line())

    def unsettled(self, rid: str) -> None:
        """Request ``rid`` (its row already appended) ended and its settlement is on its way to
        Redis: a marker line, and its entries stay until ``settled``, even once stored."""
        if rid in self._where and self._mark(UNSETTLED, rid):
            self._unsettled.add(rid)

    def settled(self, rids: Any) -> None:
        """These requests' settlements landed (or were given up: Redis was away): a marker line
        each, and their entries go once their rows are stored too."""
        stored: list[str] = []
        for rid in rids:
            if rid not in self._unsettled:
                continue
            self._unsettled.discard(rid)
            self._mark(SETTLED, rid)
            if rid in self._stored:
                self._stored.discard(rid)
                stored.append(rid)
        if stored:
            self.forget(stored)

    def forget(self, ids: Any) -> None:
        """These rows are in the database or the outbox: their entries may go (a request's
        whose settlement has not landed: once it has)."""
        for rid in ids:
            if rid in self._unsettled:
                self._stored.add(rid)
                continue
            self._pending.pop(rid, None)
            segments = self._where.pop(rid, None)
            if segments:
                # each later segment of its lines is released once the one before it is gone
                for before, after in itertools.pairwise(segments):
                    self._waits.setdefault(before, []).append(after)
                self._release(segments[0])
        if not self._pending and self._size >= IDLE_ROTATE_BYTES:
            self._rotate()  # everything written is safe: start afresh, drop the old file

    async def aclose(self) -> None:
        """Stop writing; delete the files if every entry was forgotten (else they are
        recovered at the next start)."""
        if self._syncer is not None:
            await asyncio.to_thread(self._syncer.stop)
        with contextlib.suppress(OSError):
            if self._sync == "full":
                os.fdatasync(self._fd)
            os.close(self._fd)
        if not self._pending:
            for seq in list(self._live):
                unlink(self._segment(seq))
            unlink(self._directory / f"{self._stem}.lock")
        release(self._lock)

    # --- segments ---------------------------------------------------------------------------

    def _mark(self, field: str, rid: str) -> bool:
        """A marker line of ``rid``'s; False when it could not be written."""
        return self._line(rid, orjson.dumps({field: rid}) + b"\n")

    def _line(self, rid: str, line: bytes) -> bool:
        """A line of ``rid``'s other than its row; False when it could not be written."""
        written = self._write(rid, line)
        if written and self._size >= self._segment_bytes:
            self._rotate()
        return written

    def _release(self, seq: int) -> None:
        """An id no longer needs segment ``seq``: gone when nothing else does."""
        self._live[seq] -= 1
        if self._live[seq] == 0 and seq != self._seq:
            self._drop(seq)

    def _drop(self, seq: int) -> None:
        del self._live[seq]
        unlink(self._segment(seq))
        for after in self._waits.pop(seq, ()):
            self._release(after)

    def _write(self, rid: str, line: bytes) -> bool:
        """Append one line of ``rid``'s; False when it could not be written."""
        try:
            _write_all(self._fd, line)
        except OSError as exc:
            self._failed(exc)
            return False
        segments = self._where.setdefault(rid, [])
        if not segments or segments[-1] != self._seq:
            segments.append(self._seq)
            self._live[self._seq] += 1
        self._pending.setdefault(rid, time.monotonic())
        self._size += len(line)
        return True

    def _segment(self, seq: int) -> Path:
        return self._directory / f"{self._stem}-{seq:06d}.jsonl"

    def _open(self, seq: int) -> int:
        return os.open(self._segment(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _rotate(self) -> None:
        old, old_fd = self._seq, self._fd
        self._seq += 1
        self._fd = self._open(self._seq)
        self._live[self._seq] = 0
        self._size = 0
        if self._syncer is not None:
            self._syncer.retire(old_fd)  # synced, then closed, by its thread
        else:
            os.close(old_fd)
        if self._live[old] == 0:
            self._drop(old)

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 1000 == 0:
            log.critical(
                "ledger_journal_unwritable",
                error=f"{type(exc).__name__}: {exc}",
                journal=str(self.path),
                failures=self.failures,
                detail="rows still go to the database, but a crash now could lose them; "
                "free disk space or fix the journal directory's permissions",
            )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def claim(path: Path) -> IO[bytes] | None:
    """An exclusive lock on ``path``, or None while another process holds it."""
    handle = open(path, "ab")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def release(handle: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

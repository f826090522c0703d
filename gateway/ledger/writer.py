"""The ledger writer: off the request path, batched, and never losing a row.

``record()`` is called by the request path and only puts the entry on a bounded queue (or, when
the queue is full, on an overflow list the writer empties first: memory grows during an
overload rather than rows being dropped). One background task takes what is queued, as a batch,
and inserts it on a worker thread. When the database is unreachable the batch goes to the local
outbox instead (SQLite, WAL, synchronous=FULL) and the database is tried again every
``retry_s``; once it answers, the outbox is replayed into it (idempotent: ids already there are
skipped) and emptied. ``aclose()`` drains the queue before the process exits.

With a ``Journal`` (the default in a served gateway), ``record()`` first appends the row to it,
before the answer's last byte (with ``sync="full"`` it returns a future the request path awaits),
so a killed process loses no row (the next start recovers the journal).
The journal's entries are forgotten once their batch is in the database or the outbox.

Whether the database counts as down (it failed, or froze past ``insert_timeout_s`` on a
statement) is ``Reachability``'s, in ``gateway.ledger.reachability``.

A gateway that started while the database did not answer inserts nothing until the schema,
checked once it answers, is one it may use (``SchemaGate``); until then rows wait in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.ledger.capacity import OutboxBound, OutboxGauge
from gateway.ledger.db import retire_engine
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.journal import Journal
from gateway.ledger.outbox import Outbox
from gateway.ledger.reachability import DatabaseFrozen as DatabaseFrozen
from gateway.ledger.reachability import Reachability
from gateway.ledger.rejected import ROW_ERRORS
from gateway.ledger.schema_compat import SchemaState
from gateway.ledger.schema_gate import SchemaGate
from gateway.ledger.store import insert_batch
from gateway.metrics import Metrics

log = structlog.get_logger("tiergate.ledger")


_DB_ERRORS = (SQLAlchemyError, OSError)
# The database refused these rows (not the connection): retrying them cannot help.
_ROW_ERRORS = ROW_ERRORS
DRAIN_TIMEOUT_S = 30.0


class LedgerWriter:
    DEFAULT_BATCH_SIZE = 500

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        metrics: Metrics | None = None,
        *,
        queue_size: int = 10_000,
        batch_size: int = DEFAULT_BATCH_SIZE,
        retry_s: float = 2.0,
        linger_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
        insert_timeout_s: float = 5.0,
        outbox_bound: OutboxBound | None = None,
        schema: SchemaState | None = None,
        schema_check: Callable[[], SchemaState] | None = None,
    ) -> None:
        """``schema``: the state start-up found (None: unchecked, the database did not
        answer); ``schema_check``: how to check it once the database answers (``SchemaGate``).
        """
        self._engine = engine
        self._outbox = outbox
        self._capacity = OutboxGauge(outbox_bound, metrics)
        self._journal = journal
        self._metrics = metrics
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._retry_s = retry_s
        # Wait this long for a batch to fill: a commit per handful of rows would cost the
        # request path more CPU (and GIL) than the rows themselves.
        self._linger_s = linger_s
        self._queue: asyncio.Queue[LedgerEntry | None] | None = None
        self._overflow: deque[LedgerEntry] = deque()
        self._task: asyncio.Task[None] | None = None
        # Down (failed, or frozen past ``insert_timeout_s``): rows go to the outbox meanwhile.
        self._db = Reachability(
            outbox, metrics, retry_s=retry_s, timeout_s=insert_timeout_s, clock=clock
        )
        self._idle: asyncio.Event | None = None
        self._inflight: list[LedgerEntry] = []  # being inserted now (for a timed-out drain)
        self._hurry: asyncio.Event | None = None  # set: write what is queued, do not linger
        self._schema = SchemaGate(schema, schema_check, retry_s=retry_s, clock=clock)

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def capacity(self) -> OutboxGauge:
        """The outbox against its bound (``TIERGATE_OUTBOX_MAX_BYTES``): full, no new request
        may be admitted."""
        return self._capacity

    @property
    def schema(self) -> SchemaState | None:
        """The ledger schema's state: as checked at start, or since (None: not checked yet)."""
        return self._schema.state

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def journal(self) -> Journal | None:
        """The write-ahead journal (``TIERGATE_JOURNAL``), or None."""
        return self._journal

    @property
    def journaling(self) -> bool:
        """Whether rows go to a write-ahead journal (``TIERGATE_JOURNAL``)."""
        return self._journal is not None

    @property
    def queue_depth(self) -> int:
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + len(self._overflow)

    def start(self) -> None:
        self._queue = asyncio.Queue(self._queue_size)
        self._idle = asyncio.Event()
        self._hurry = asyncio.Event()
        if not self._outbox.size:
            self._idle.set()  # else flush() also waits for the first replay of what was left
        if self._journal is not None:
            self._journal.start()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        self._gauges()

    def record(self, entry: LedgerEntry) -> asyncio.Future[None] | None:
        """Journal the row (already on disk against a killed process when this returns) and
        queue it. Never blocks and never raises on the request path. With ``sync="full"`` a
        future, done once it would survive a power cut: the caller awaits it before the answer
        ends."""
        assert self._queue is not None, "LedgerWriter.start() was not called"
        assert self._idle is not None
        written = self._journal.append(entry) if self._journal is not None else None
        self._idle.clear()
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            if not self._overflow:
                log.warning("ledger_queue_full", size=self._queue_size)
            self._overflow.append(entry)
        return written

    def opened(self, entry: LedgerEntry) -> asyncio.Future[None] | None:
        """Journal a request's row as it would stand if the process died now (an interrupted
        row: written as a try reaches its backend); its real row replaces it at the end. None
        without a journal."""
        return self._journal.append(entry) if self._journal is not None else None

    async def aclose(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Write everything queued (to the database, or the outbox), then stop. If the database
        hangs past ``timeout_s`` the rest goes to the outbox (replayed, idempotently, by the
        next run), so a stuck database cannot make a shutdown lose rows."""
        if self._queue is None or self._task is None:
            return
        log.info("ledger_draining", rows=self.queue_depth, outbox_rows=self._outbox.size)
        await self._queue.put(None)  # after every row already queued
        assert self._hurry is not None
        self._hurry.set()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            left = [*self._inflight, *self._overflow]
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    left.append(item)
            await asyncio.to_thread(self._outbox.put, left)
            self._forget(left)
            log.error(
                "ledger_drain_timeout",
                rows=len(left),
                detail=f"the database did not take the rows within {timeout_s} s; they are in "
                f"the outbox ({self._outbox.path}) and are replayed at the next start",
            )
            self._outbox.close()
            with contextlib.suppress(*_DB_ERRORS):
                retire_engine(self._engine)
        if self._journal is not None:
            await self._journal.aclose()
        self._gauges()

    async def flush(self) -> None:
        """Return once every row recorded so far has been written (to the database or the
        outbox), and the rows an earlier run left in the outbox were replayed (or found the
        database still unreachable)."""
        assert self._idle is not None
        assert self._hurry is not None
        if not self._idle.is_set():
            self._hurry.set()
        await self._idle.wait()

    # --- the background task ----------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        # The first pass has no batch: it replays what a previous run left in the outbox.
        batch: list[LedgerEntry] = []
        closing = False
        while True:
            try:
                if batch:
                    await self._write(batch)
                elif not self._db.is_down():
                    await self._schema_ready()  # idle: /readyz shows the verdict all the same
                if self._outbox.size and not self._db.is_down() and await self._schema_ready():
                    await self._replay()
            except Exception as exc:  # the writer must outlive anything a batch does
                log.error("ledger_writer_error", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._gauges()
                if self._idle is not None and not self.queue_depth:
                    self._idle.set()
                    if self._hurry is not None:
                        self._hurry.clear()
            if closing:
                break
            batch, closing = await self._collect()
            if not batch and not closing:
                # Idle: another process sharing the outbox (serve --workers) may have filled or
                # replayed it; its bound is judged on what the file holds.
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.to_thread(self._outbox.refresh)
        with contextlib.suppress(*_DB_ERRORS):
            retire_engine(self._engine)
        self._outbox.close()

    async def _collect(self) -> tuple[list[LedgerEntry], bool]:
        """The next batch; waits for a row, or ``retry_s`` (to retry the outbox when idle)."""
        assert self._queue is not None
        batch: list[LedgerEntry] = []
        while self._overflow and len(batch) < self._batch_size:
            batch.append(self._overflow.popleft())
        if not batch:
            try:
                async with asyncio.timeout(self._retry_s):
                    first = await self._queue.get()
            except TimeoutError:
                return batch, False
            if first is None:
                return batch, True
            batch.append(first)
        if self._linger_s > 0 and self._queue.qsize() < self._batch_size - len(batch):
            # Let the batch fill (one wait per batch), unless someone is waiting for it.
            assert self._hurry is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):
                    await self._hurry.wait()
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    async def _insert_within(self, rows: list[LedgerEntry]) -> None:
        """``insert_batch`` on a worker thread, given up on after ``insert_timeout_s``."""
        await self._db.within(lambda: insert_batch(self._engine, rows))

    async def _schema_ready(self) -> bool:
        """Whether the schema may take rows (``SchemaGate``); a database that does not answer
        the check counts as down."""
        try:
            return await self._schema.ready(self._db.within)
        except _DB_ERRORS as exc:
            self._db.mark_down(exc)
            return False
        except Exception as exc:  # a check that breaks otherwise (Alembic, a migration) holds
            # the rows in the outbox like an unusable schema: never drops the batch
            log.error(
                "ledger_schema_check_failed",
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                detail="rows wait in the local outbox; the check runs again shortly",
            )
            return False

    async def _insert(self, rows: list[LedgerEntry]) -> list[LedgerEntry]:
        """Insert ``rows``; returns the rows written. A batch the database refuses for its
        *data* is split, so one bad row is set aside (``ledger_rows_rejected``, kept in the
        outbox's rejected table) instead of holding every other row back."""
        self._inflight = rows
        try:
            await self._insert_within(rows)
            return rows
        except _ROW_ERRORS:
            pass  # split below
        finally:
            self._inflight = []
        written: list[LedgerEntry] = []
        for row in rows:
            try:
                await self._insert_within([row])
            except _ROW_ERRORS as exc:
                await asyncio.to_thread(self._outbox.reject, [row], str(exc).splitlines()[0])
                log.error("ledger_rows_rejected", ids=[row.id], error=str(exc).splitlines()[0])
            else:
                written.append(row)
        return written

    async def _write(self, batch: list[LedgerEntry]) -> None:
        if not self._db.is_down() and await self._schema_ready():
            try:
                await self._insert(batch)
            except _DB_ERRORS as exc:
                self._db.mark_down(exc)
            else:
                self._db.mark_up()
                self._count("db", len(batch))
                self._forget(batch)
                return
        try:
            await asyncio.to_thread(self._outbox.put, batch)
        except (sqlite3.Error, OSError) as exc:
            # Neither the database nor the outbox takes rows (disk full?): keep them in memory
            # and try again shortly rather than drop them.
            self._overflow.extendleft(reversed(batch))
            log.critical(
                "ledger_outbox_unwritable",
                error=f"{type(exc).__name__}: {exc}",
                outbox=str(self._outbox.path),
                rows_held_in_memory=len(self._overflow),
            )
            await asyncio.sleep(self._retry_s)
            return
        self._count("outbox", len(batch))
        self._forget(batch)

    def _forget(self, rows: list[LedgerEntry]) -> None:
        """These rows are safe elsewhere (database or outbox): out of the journal."""
        if self._journal is not None:
            self._journal.forget(row.id for row in rows)

    async def _replay(self) -> None:
        while self._outbox.size:
            rows = await asyncio.to_thread(self._outbox.peek, self._batch_size)
            if not rows:
                return
            try:
                await self._insert(rows)
            except _DB_ERRORS as exc:
                self._db.mark_down(exc)
                return
            self._db.mark_up()
            await asyncio.to_thread(self._outbox.remove, [r.id for r in rows])
            self._count("replayed", len(rows))
            log.info("ledger_outbox_replayed", rows=len(rows), left=self._outbox.size)

    def _count(self, dest: str, n: int) -> None:
        if self._metrics is not None:
            self._metrics.ledger_rows.labels(dest).inc(n)

    def _gauges(self) -> None:
        outbox = self._outbox
        self._capacity.observe(outbox.size, outbox.used_bytes, outbox.rejected_size)
        if self._metrics is not None:
            self._metrics.ledger_queue.set(self.queue_depth)
            if self._journal is not None:
                self._metrics.ledger_journal.set(self._journal.backlog)
                self._metrics.ledger_journal_age.set(self._journal.oldest_age_s())

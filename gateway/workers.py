"""``tiergate serve --workers N``: N gateway processes sharing one listening socket.

One Python process saturates one core (the overhead benchmark shows it); on a machine with more
cores, more processes serve more requests. We supervise the workers ourselves rather than use
uvicorn's supervisor because its SIGHUP *restarts* workers — and a worker restarting into an
invalid policy would fail, where tiergate promises that an invalid policy is rejected while the
last good one keeps serving. Here SIGHUP is forwarded, so every worker reloads in place.

* Each worker listens on its own socket with SO_REUSEPORT, so the kernel spreads connections
  evenly (one shared socket lets whichever worker wakes first take most of them). The parent
  binds the port (and the ops port) first without listening (``gateway.listening``): a conflict
  fails at once (a ``BindError`` naming the setting), and the port stays held. A socket bound
  with SO_REUSEADDR can still take it to listen before a worker binds (Linux lets two such
  sockets share a port while neither listens); the worker then tells the parent, which stops the
  others and fails the same way, rather than restarting it into the same conflict forever.
* SIGHUP → each worker reloads its policy (validate, then swap, or keep the last good one).
* ``POST /admin/policy/reload`` → the worker that took the call reloads, then asks the parent
  (over a pipe each worker has to it) to have every other worker reload; the parent passes the
  request on, gathers their results (for at most ``BROADCAST_WAIT_S``) and hands them back, so
  the answer says how many workers serve the new policy. An invalid policy is rejected by the
  first worker (422) and goes no further.
* SIGTERM / SIGINT → each worker drains and stops; the parent waits for them.
* A worker that dies unexpectedly is restarted (after a second, so a crash loop cannot spin).
* Metrics: Prometheus' multiprocess mode (one directory of per-process files, summed at
  scrape time), so ``/metrics`` counts every worker's requests whichever worker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from gateway.listening import OPS_PORT_VARIABLE, BindError, bind, check_port_free
from gateway.server import gateway_server
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.routing.runtime import Runtime

log = structlog.get_logger("tiergate.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_DELAY_S = 1.0
# How long the parent waits for the other workers' reload results; a worker that is starting
# (or stuck) is reported as not answered. The asking worker waits a little longer for the lot.
BROADCAST_WAIT_S = 10.0
ANSWER_WAIT_S = BROADCAST_WAIT_S + 5.0
BIND_FAILED = 3  # a worker's exit status when it could not listen (it told the parent why)


def run_worker(port: int, link: Connection | None = None) -> None:
    """One worker: the app from the environment's settings, on its own SO_REUSEPORT sockets
    (the main port, and the ops port when TIERGATE_OPS_PORT is set); ``link``, its pipe to the
    supervisor, carries the admin reload to the other workers."""
    from gateway.app import create_app

    settings = Settings()
    try:
        sockets = [bind(settings.host, port, listen=True)]
        if settings.ops_port is not None:
            sockets.append(
                bind(settings.host, settings.ops_port, listen=True, variable=OPS_PORT_VARIABLE)
            )
    except BindError as exc:  # taken since the parent's check: the parent says so and stops
        if link is not None:
            with contextlib.suppress(OSError):
                link.send(("failed", str(exc)))
        raise SystemExit(BIND_FAILED) from None
    peers = WorkerLink(link) if link is not None else None
    server = gateway_server(create_app(settings, peers=peers), settings)
    server.run(sockets=sockets)


class WorkerLink:
    """A worker's end of its pipe to the supervisor (``gateway.http.admin.Peers``).

    Messages are tuples: a worker sends ``("reload", rid)`` to have the others reload and
    ``("reloaded", rid, result)`` when it reloaded for another; the parent sends
    ``("reload", rid)`` to a worker and ``("done", rid, results)`` to the one that asked. The
    pipe is read on the event loop (``add_reader``), written from it: one thread each side."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._runtime: Runtime | None = None
        self._asked: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}

    def attach(self, runtime: Runtime) -> None:
        self._runtime = runtime
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._readable)

    def detach(self) -> None:
        self._runtime = None
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        for future in self._asked.values():
            future.cancel()

    async def reload(self) -> list[dict[str, Any]] | None:
        rid = uuid.uuid4().hex
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._asked[rid] = future
        try:
            self._conn.send(("reload", rid))
            async with asyncio.timeout(ANSWER_WAIT_S):
                return await future
        except (TimeoutError, OSError) as exc:
            log.warning("policy_reload_not_broadcast", error=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self._asked.pop(rid, None)

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                message = self._conn.recv()
                self._handle(message)
        except (EOFError, OSError):  # the parent is gone: nothing more will come
            asyncio.get_running_loop().remove_reader(self._conn.fileno())

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind, rid = message[0], message[1]
        if kind == "reload" and self._runtime is not None:
            self._runtime.spawn(self._reload_for(self._runtime, rid), "peer-reload")
        elif kind == "done":
            future = self._asked.get(rid)
            if future is not None and not future.done():
                future.set_result(message[2])

    async def _reload_for(self, runtime: Runtime, rid: str) -> None:
        result = await runtime.reload("admin")
        self._conn.send(
            ("reloaded", rid, {"pid": os.getpid(), "answered": True, **result.as_dict()})
        )


@dataclass(slots=True)
class _Broadcast:
    """An admin reload the parent passed on: who asked, whom it waits for, what came back."""

    asker: int  # the asking worker's pid
    waiting: set[int]  # pids
    deadline: float
    results: list[dict[str, Any]] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._links: list[Connection] = []  # the parent's end of each worker's pipe
        self._broadcasts: dict[str, _Broadcast] = {}
        self._stopping = False
        self._failed: str | None = None  # why a worker could not listen (``BindError``)

    def run(self) -> int:
        host, ops_port = self._settings.host, self._settings.ops_port
        check_port_free(host, self._settings.port)
        sock = bind(host, self._settings.port, listen=False)
        port = int(sock.getsockname()[1])
        ops_sock = None
        if ops_port:
            try:
                check_port_free(host, ops_port, OPS_PORT_VARIABLE)
                ops_sock = bind(host, ops_port, listen=False, variable=OPS_PORT_VARIABLE)
            except BindError:
                sock.close()
                raise
        metrics_dir = tempfile.mkdtemp(prefix="tiergate-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers
        signal.signal(signal.SIGHUP, self._forward_hup)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            for _ in range(self._count):
                proc, link = self._start(port)
                self._procs.append(proc)
                self._links.append(link)
            log.info("workers_started", workers=self._count, pids=[p.pid for p in self._procs])
            while not self._stopping:
                ready = wait([*(p.sentinel for p in self._procs), *self._links], self._wait_s())
                for link in [r for r in ready if isinstance(r, Connection)]:
                    self._read(link)
                for index, proc in enumerate(self._procs):
                    if proc.is_alive() or self._stopping:
                        continue
                    self._read(self._links[index])  # one that could not listen said why
                    if self._failed is not None:
                        break
                    log.error("worker_died", pid=proc.pid, exitcode=proc.exitcode)
                    self._gone(proc.pid)  # answered by ``_expire`` below
                    self._links[index].close()
                    time.sleep(RESTART_DELAY_S)
                    self._procs[index], self._links[index] = self._start(port)
                if self._failed is not None:  # the port was taken after our check: stop all
                    self._stop(signal.SIGTERM, None)
                self._expire()
            # Each drains for up to TIERGATE_DRAIN_S, then closes the ledger and the rest.
            for proc in self._procs:
                proc.join(timeout=self._settings.drain_s + 30)
            if self._failed is not None:
                raise BindError(self._failed)
            return 0
        finally:
            sock.close()
            if ops_sock is not None:
                ops_sock.close()
            for link in self._links:
                link.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start(self, port: int) -> tuple[BaseProcess, Connection]:
        ours, theirs = self._context.Pipe()
        proc = self._context.Process(target=run_worker, args=(port, theirs), name="tiergate-worker")
        proc.start()
        theirs.close()  # the worker has its copy: a dead worker's pipe then reads as ended
        return proc, ours

    # --- the admin reload, passed on to every worker --------------------------------------

    def _wait_s(self) -> float:
        """Until the next check: half a second, or the nearest broadcast's deadline."""
        now = time.monotonic()
        return min([0.5, *(max(0.0, b.deadline - now) for b in self._broadcasts.values())])

    def _read(self, link: Connection) -> None:
        index = self._links.index(link)
        pid = self._procs[index].pid
        try:
            while link.poll():
                message = link.recv()
                if message[0] == "failed" and self._failed is None:
                    self._failed = message[1]
                elif message[0] == "reload" and pid is not None:
                    self._broadcast(message[1], pid)
                elif message[0] == "reloaded" and pid is not None:
                    self._reloaded(message[1], pid, message[2])
        except (EOFError, OSError):
            pass  # the worker died: its sentinel says so, and it is restarted

    def _broadcast(self, rid: str, asker: int) -> None:
        """Worker ``asker`` reloaded on an admin call: have every other one reload."""
        others = {
            index: proc.pid
            for index, proc in enumerate(self._procs)
            if proc.pid is not None and proc.pid != asker and proc.is_alive()
        }
        deadline = time.monotonic() + BROADCAST_WAIT_S
        self._broadcasts[rid] = _Broadcast(asker, set(others.values()), deadline)
        for index, pid in others.items():
            try:
                self._links[index].send(("reload", rid))
            except OSError:
                self._gone(pid)
        log.info("policy_reload_broadcast", asker=asker, workers=sorted(others.values()))
        self._finish_done()

    def _reloaded(self, rid: str, pid: int, result: dict[str, Any]) -> None:
        broadcast = self._broadcasts.get(rid)
        if broadcast is not None and pid in broadcast.waiting:
            broadcast.waiting.discard(pid)
            broadcast.results.append(result)
            self._finish_done()

    def _gone(self, pid: int | None) -> None:
        """A worker that died, or whose pipe broke, answers no broadcast."""
        for broadcast in self._broadcasts.values():
            if pid in broadcast.waiting:
                broadcast.waiting.discard(pid)
                broadcast.results.append({"pid": pid, "answered": False, "detail": "exited"})

    def _expire(self) -> None:
        now = time.monotonic()
        for broadcast in self._broadcasts.values():
            if broadcast.waiting and now >= broadcast.deadline:
                broadcast.results += [
                    {
                        "pid": pid,
                        "answered": False,
                        "detail": f"no answer in {BROADCAST_WAIT_S:g} s",
                    }
                    for pid in sorted(broadcast.waiting)
                ]
                broadcast.waiting.clear()
        self._finish_done()

    def _finish_done(self) -> None:
        """Hand each broadcast that has nothing left to wait for back to its asker."""
        for rid, broadcast in list(self._broadcasts.items()):
            if broadcast.waiting:
                continue
            del self._broadcasts[rid]
            for proc, link in zip(self._procs, self._links, strict=True):
                if proc.pid == broadcast.asker:
                    with contextlib.suppress(OSError):  # the asker died meanwhile
                        link.send(("done", rid, broadcast.results))

    def _forward_hup(self, _signum: int, _frame: FrameType | None) -> None:
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

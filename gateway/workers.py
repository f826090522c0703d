"""``tiergate serve --workers N``: N gateway processes sharing one listening socket.

One Python process saturates one core (the overhead benchmark shows it); on a machine with more
cores, more processes serve more requests. We supervise the workers ourselves rather than use
uvicorn's supervisor because its SIGHUP *restarts* workers — and a worker restarting into an
invalid policy would fail, where tiergate promises that an invalid policy is rejected while the
last good one keeps serving. Here SIGHUP is forwarded, so every worker reloads in place.

* Each worker listens on its own socket with SO_REUSEPORT, so the kernel spreads connections
  evenly (one shared socket lets whichever worker wakes first take most of them). The parent
  binds the port (and the ops port) first without listening: a conflict fails at once (a
  ``BindError`` naming the setting), and the port stays held.
* SIGHUP → each worker reloads its policy (validate, then swap, or keep the last good one).
* SIGTERM / SIGINT → each worker drains and stops; the parent waits for them.
* A worker that dies unexpectedly is restarted (after a second, so a crash loop cannot spin).
* Metrics: Prometheus' multiprocess mode (one directory of per-process files, summed at
  scrape time), so ``/metrics`` counts every worker's requests whichever worker answers.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from gateway.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = structlog.get_logger("tiergate.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_DELAY_S = 1.0


PORT_VARIABLE = "TIERGATE_PORT / --port"
OPS_PORT_VARIABLE = "TIERGATE_OPS_PORT"


class BindError(RuntimeError):
    """A port cannot be listened on; the message says which setting and what to do."""


def bind(
    host: str,
    port: int,
    *,
    listen: bool,
    reuse_port: bool = True,
    variable: str = PORT_VARIABLE,
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_problem(host, port, variable, exc)) from None
    return sock


def check_port_free(host: str, port: int, variable: str = PORT_VARIABLE) -> None:
    """Fail if anything listens on ``port``: a socket with SO_REUSEPORT (what the workers bind)
    would share the port with another gateway of the same user instead of failing."""
    bind(host, port, listen=False, reuse_port=False, variable=variable).close()


def _bind_problem(host: str, port: int, variable: str, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host!r}: no such address ({exc.strerror}); set TIERGATE_HOST / "
            f"--host to an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} is already in use ({variable}); stop the other process or pick "
            f"another port"
        )
    if exc.errno == errno.EACCES:
        return (
            f"no permission to listen on port {port} ({variable}): ports below 1024 need root "
            f"or CAP_NET_BIND_SERVICE; pick a port above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}: not an address of this machine; set TIERGATE_HOST / "
            f"--host to one of its addresses (127.0.0.1, or 0.0.0.0 for all)"
        )
    return f"cannot listen on {host} port {port} ({variable}): {exc.strerror or exc}"


def run_worker(port: int) -> None:
    """One worker: the app from the environment's settings, on its own SO_REUSEPORT sockets
    (the main port, and the ops port when TIERGATE_OPS_PORT is set)."""
    import uvicorn

    from gateway.app import create_app

    settings = Settings()
    sockets = [bind(settings.host, port, listen=True)]
    if settings.ops_port is not None:
        sockets.append(bind(settings.host, settings.ops_port, listen=True))
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    server.run(sockets=sockets)


def run_single(app: FastAPI, settings: Settings) -> None:
    """``tiergate serve`` with one process. The ports are bound here, before the server
    starts: a taken port is a ``BindError`` before the gateway opens anything (or logs
    ``gateway_started``). With an ops port, one server listens on both ports (the app tells
    them apart by the local port: ``ApiKeys``)."""
    import uvicorn

    sockets = [bind(settings.host, settings.port, listen=True, reuse_port=False)]
    try:
        if settings.ops_port is not None:
            sockets.append(
                bind(
                    settings.host,
                    settings.ops_port,
                    listen=True,
                    reuse_port=False,
                    variable=OPS_PORT_VARIABLE,
                )
            )
        uvicorn.Server(uvicorn_config(app, settings)).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
        proxy_headers=False,  # tiergate is the edge; trust no forwarded headers by default
    )


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._stopping = False

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
            self._procs = [self._start(port) for _ in range(self._count)]
            log.info("workers_started", workers=self._count, pids=[p.pid for p in self._procs])
            while not self._stopping:
                wait([p.sentinel for p in self._procs], timeout=0.5)
                for index, proc in enumerate(self._procs):
                    if not proc.is_alive() and not self._stopping:
                        log.error("worker_died", pid=proc.pid, exitcode=proc.exitcode)
                        time.sleep(RESTART_DELAY_S)
                        self._procs[index] = self._start(port)
            for proc in self._procs:
                proc.join(timeout=60)
            return 0
        finally:
            sock.close()
            if ops_sock is not None:
                ops_sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start(self, port: int) -> BaseProcess:
        proc = self._context.Process(target=run_worker, args=(port,), name="tiergate-worker")
        proc.start()
        return proc

    def _forward_hup(self, _signum: int, _frame: FrameType | None) -> None:
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

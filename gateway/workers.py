"""``tiergate serve --workers N``: N gateway processes sharing one listening socket.

One Python process saturates one core (the overhead benchmark shows it); on a machine with more
cores, more processes serve more requests. We supervise the workers ourselves rather than use
uvicorn's supervisor because its SIGHUP *restarts* workers — and a worker restarting into an
invalid policy would fail, where tiergate promises that an invalid policy is rejected while the
last good one keeps serving. Here SIGHUP is forwarded, so every worker reloads in place.

* Each worker listens on its own socket with SO_REUSEPORT, so the kernel spreads connections
  evenly (one shared socket lets whichever worker wakes first take most of them). The parent
  binds the port (and the ops port) first without listening: a conflict fails at once, and the
  port stays held.
* SIGHUP → each worker reloads its policy (validate, then swap, or keep the last good one).
* SIGTERM / SIGINT → each worker drains and stops; the parent waits for them.
* A worker that dies unexpectedly is restarted (after a second, so a crash loop cannot spin).
* Metrics: Prometheus' multiprocess mode (one directory of per-process files, summed at
  scrape time), so ``/metrics`` counts every worker's requests whichever worker answers.
"""

from __future__ import annotations

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


def bind(host: str, port: int, *, listen: bool, reuse_port: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    if listen:
        sock.listen(2048)
    return sock


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
    """``tiergate serve`` with one process. With an ops port, one server listens on both
    ports (the app tells them apart by the local port: ``ApiKeys``)."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, settings))
    if settings.ops_port is None:
        server.run()
        return
    sockets = [
        bind(settings.host, port, listen=True, reuse_port=False)
        for port in (settings.port, settings.ops_port)
    ]
    try:
        server.run(sockets=sockets)
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
        metrics_dir = tempfile.mkdtemp(prefix="tiergate-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers
        sock = bind(self._settings.host, self._settings.port, listen=False)
        port = int(sock.getsockname()[1])
        ops_port = self._settings.ops_port
        ops_sock = bind(self._settings.host, ops_port, listen=False) if ops_port else None
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

"""Redis for the tests.

Two kinds:

* the **shared** Redis: the one answering on 127.0.0.1:6379, used through one dedicated
  database index (``TEST_DB``) that is flushed before and after each test; other indexes are
  never touched. When nothing answers there, a private ``redis-server`` is started in a
  temporary directory instead. If neither works the tests fail and say what to install; they
  never skip.
* a **private** ``redis-server`` process (``PrivateRedis``) that a test owns and may stop,
  kill, freeze (SIGSTOP) and thaw (SIGCONT): fault tests never do that to the machine's Redis.

Several pytest runs may share this machine (people test in parallel), and flushing the test
index under another run's feet would break its tests: ``db_lock`` serialises the users of
the shared index across processes with a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

HOST, PORT = "127.0.0.1", 6379
TEST_DB = 15
START_WAIT_S = 10.0
LOCK_WAIT_S = 300.0
LOCK_PATH = Path(tempfile.gettempdir()) / f"tiergate-tests-redis-{PORT}-db{TEST_DB}.lock"
INSTALL_HINT = (
    "install Redis (Debian: apt-get install redis-server) and start it on 127.0.0.1:6379, or "
    "at least put redis-server on PATH so the tests can start a private one"
)


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db, socket_timeout=2.0)


def answers(host: str, port: int) -> bool:
    """Whether a Redis answers PING there (within a second)."""
    client = redis.Redis(host=host, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError(f"redis-server is not installed: {INSTALL_HINT}")
    return found


class PrivateRedis:
    """A ``redis-server`` this test owns, on a free loopback port, its files in ``directory``;
    nothing persisted. ``stop``/``kill`` end it, ``freeze``/``thaw`` stop and continue it,
    ``start`` (again) brings it back on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.server = RedisServer("127.0.0.1", self.port)
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._log = directory / "redis.log"

    def url(self, db: int = 0) -> str:
        return self.server.url(db)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        command = [
            binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self._log),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_WAIT_S
        while not answers(self.server.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {self._tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering after {START_WAIT_S} s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.02)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the private redis-server is not running")
        self.process.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """End the server (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait for it."""
        if self.frozen:
            self.thaw()
        self._signal(sig)
        assert self.process is not None
        self.process.wait(timeout=START_WAIT_S)

    def freeze(self) -> None:
        """SIGSTOP: the process stays, its socket still accepts connections, nothing answers."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if self.frozen:
                self.thaw()
            self.process.kill()
            self.process.wait(timeout=START_WAIT_S)
        self.process = None

    def _tail(self) -> str:
        try:
            return self._log.read_text()[-500:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def shared() -> Iterator[RedisServer]:
    """The Redis on 127.0.0.1:6379, or a private one when it does not answer."""
    if answers(HOST, PORT):
        yield RedisServer(HOST, PORT)
        return
    with tempfile.TemporaryDirectory(prefix="tiergate-redis-") as directory:
        private = PrivateRedis(Path(directory))
        private.start()
        try:
            yield private.server
        finally:
            private.close()


@contextlib.contextmanager
def db_lock(wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the machine-wide lock on the shared test index (other pytest runs wait)."""
    with LOCK_PATH.open("a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another test run held {LOCK_PATH} for {wait_s} s (pid in the file)"
                    ) from None
                time.sleep(0.05)  # polling a lock another process holds
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def fresh_database(server: RedisServer, db: int = TEST_DB) -> Iterator[str]:
    """``db`` on ``server``, empty, locked for this test; flushed again afterwards. Yields its
    URL."""
    with db_lock():
        client = server.client(db)
        try:
            client.flushdb()
            try:
                yield server.url(db)
            finally:
                client.flushdb()
        finally:
            client.close()

"""A PostgreSQL for the tests: the one running on 127.0.0.1:5432 when it answers, otherwise a
throwaway cluster started from the installed binaries in a temporary directory (as
pytest-postgresql does). If neither works the tests fail and say what to install; they never
skip silently.

Each test database is created fresh (``tiergate_test_<random>``) and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

HOST, PORT, ADMIN_DB = "127.0.0.1", 5432, "test"
USERS = ("postgres", os.environ.get("USER", "root"))


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str

    def admin_dsn(self, db: str = ADMIN_DB) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{db}"


def _try_connect(host: str, port: int, user: str, db: str) -> bool:
    try:
        with psycopg.connect(
            host=host, port=port, user=user, dbname=db, connect_timeout=2
        ) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """The running PostgreSQL, or a temporary one."""
    for user in USERS:
        if _try_connect(HOST, PORT, user, ADMIN_DB):
            yield Cluster(HOST, PORT, user)
            return
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError(
            "no PostgreSQL answers on 127.0.0.1:5432 and no initdb was found: install "
            "PostgreSQL (Debian: apt-get install postgresql) or start it "
            "(pg_ctlcluster --skip-systemctl-redirect <version> main start)"
        )
    root = Path(tempfile.mkdtemp(prefix="tiergate-pg-"))
    data, port = root / "data", _free_port()
    user = "postgres"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *run_as,
                str(binaries / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                user,
                ADMIN_DB,
            ],
            check=True,
            capture_output=True,
        )
        yield Cluster("127.0.0.1", port, user)
    finally:
        subprocess.run(
            [*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def database(server: Cluster) -> Iterator[str]:
    """A fresh, empty database on ``server``; yields its SQLAlchemy URL; dropped afterwards."""
    name = f"tiergate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(server.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

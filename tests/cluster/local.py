"""The local cluster (``deploy/local/cluster.sh``) seen from the tests: its settings from
``.cluster/env``, its replicas, HAProxy's stats socket, the ledger, and a load that keeps going
through errors (each client records every exchange and carries on)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "cluster.sh"
# Where each check's counts are kept as JSON (make cluster-test: bench/results); unset: only
# printed.
RESULTS = os.environ.get("TIERGATE_CLUSTER_RESULTS")
WAIT_S = 60.0


def until(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``within_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def each_replica(
    cluster: Cluster,
    check: Callable[[int], bool],
    what: str,
    within_s: float = WAIT_S,
    first: int = 1,
) -> dict[int, float]:
    """``until`` for each replica in turn (from ``first``): the seconds each took."""
    return {
        n: until(functools.partial(check, n), f"{what} on r{n}", within_s)
        for n in range(first, cluster.replicas + 1)
    }


def gone(pid: int) -> bool:
    """The process has exited (a zombie its new parent has not reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def refuses(port: int) -> bool:
    """Nothing listens on ``port`` any more (a connection is refused)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


@dataclass
class Cluster:
    state: Path

    @property
    def env(self) -> dict[str, str]:
        return read_env(self.state / "env")

    @property
    def url(self) -> str:
        return self.env["URL"]

    @property
    def replicas(self) -> int:
        return int(self.env["REPLICAS"])

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.env['API_KEY']}"}

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.env['ADMIN_KEY']}"}

    def replica_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.env[f'R{n}_PORT']}"

    def pid(self, n: int) -> int:
        return int(self.env[f"R{n}_PID"])

    def script(self, *args: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), *args],
            env={**os.environ, "TIERGATE_CLUSTER_DIR": str(self.state)},
            capture_output=True,
            text=True,
            timeout=WAIT_S + 30,
        )
        assert done.returncode == 0, f"cluster.sh {' '.join(args)}: {done.stderr}"
        return done.stdout

    def tiergate(self, *args: str) -> str:
        """A ``tiergate`` command against the cluster's ledger database."""
        done = subprocess.run(
            [str(REPO / ".venv" / "bin" / "tiergate"), *args],
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "TIERGATE_DATABASE_URL": self.env["DATABASE_URL"],
                "TIERGATE_POLICY": self.env["POLICY"],
            },
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert done.returncode == 0, f"tiergate {' '.join(args)}: {done.stderr}"
        return done.stdout

    # --- HAProxy --------------------------------------------------------------------------

    def haproxy(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.state / "haproxy.sock"))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` row of each replica (``r1`` …), by column name."""
        lines = self.haproxy("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            r["svname"]: r
            for r in rows
            if r.get("pxname") == "tiergate" and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, n: int) -> str:
        return self.servers()[f"r{n}"]["status"]

    def wait_all_up(self) -> float:
        return until(
            lambda: all(s["status"] == "UP" for s in self.servers().values()),
            "every replica UP in HAProxy",
        )

    # --- replicas -------------------------------------------------------------------------

    def start(self, n: int) -> None:
        self.script("start", str(n))

    def stop(self, n: int, signal: str = "TERM") -> None:
        self.script("stop", str(n), signal)

    def healthy(self, n: int) -> bool:
        try:
            port = self.env[f"R{n}_OPS_PORT"]
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    # --- the ledger -----------------------------------------------------------------------

    def dsn(self) -> str:
        return self.env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)

    def row_counts(self, ids: list[str]) -> dict[str, int]:
        """How many ledger rows each of ``ids`` has (absent: none)."""
        with psycopg.connect(self.dsn()) as connection:
            found = connection.execute(
                "SELECT id::text, count(*) FROM ledger_requests WHERE id::text = ANY(%s) "
                "GROUP BY id",
                (ids,),
            ).fetchall()
        return {str(rid): int(count) for rid, count in found}


def report(name: str, numbers: dict[str, Any]) -> None:
    """Print a check's counts and keep them in bench/results/cluster-<name>.json."""
    print(f"\n[cluster {name}] " + json.dumps(numbers, sort_keys=True))
    if RESULTS:
        Path(RESULTS).mkdir(parents=True, exist_ok=True)
        (Path(RESULTS) / f"cluster-{name}.json").write_text(json.dumps(numbers, indent=2) + "\n")


# --- load -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    status: int | None  # None: no response (a transport error)
    request_id: str | None
    replica: str | None  # which server HAProxy sent it to (x-tiergate-replica)
    error: str | None
    stream: bool
    started: float
    ended: float


@dataclass
class Load:
    """``clients`` concurrent clients through HAProxy, each on its own connection, sending
    plain and streamed chat completions in turn until stopped; unlike the fault tests' load a
    client carries on after an error (a new connection), so a run counts every failure."""

    url: str
    headers: dict[str, str]
    clients: int = 8
    exchanges: list[Exchange] = field(default_factory=list)
    in_flight: dict[int, float] = field(default_factory=dict)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), WAIT_S)

    @property
    def ok(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status == 200]

    @property
    def failed(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status != 200]

    async def until(
        self, condition: Callable[[], bool], what: str, within_s: float = WAIT_S
    ) -> None:
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > within_s:
                raise AssertionError(f"timed out after {within_s} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def _client(self, index: int) -> None:
        turn = index
        async with httpx.AsyncClient(base_url=self.url, timeout=WAIT_S) as http:
            while not self._stopping.is_set():
                stream = turn % 2 == 1
                turn += 1
                self.in_flight[index] = time.monotonic()
                self.exchanges.append(await self._one(http, stream))
                self.in_flight.pop(index, None)

    async def _one(self, http: httpx.AsyncClient, stream: bool) -> Exchange:
        body = {
            "model": "auto",
            "stream": stream,
            "messages": [{"role": "user", "content": f"hello there {time.monotonic_ns()}"}],
        }
        started = time.monotonic()
        rid = replica = None
        status: int | None = None
        try:
            async with http.stream(
                "POST", "/v1/chat/completions", json=body, headers=self.headers
            ) as response:
                rid = response.headers.get("x-request-id")
                replica = response.headers.get("x-tiergate-replica")
                text = (await response.aread()).decode()
                status = response.status_code
                if stream and status == 200 and "data: [DONE]" not in text:
                    return Exchange(None, rid, replica, "stream cut", stream, started, _now())
        except httpx.HTTPError as exc:
            return Exchange(None, rid, replica, type(exc).__name__, stream, started, _now())
        return Exchange(status, rid, replica, None, stream, started, _now())


def _now() -> float:
    return time.monotonic()

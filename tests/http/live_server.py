"""A real ``tiergate serve`` process on a free loopback port, its JSON log read as it comes,
for tests that need the whole server (reload triggers, workers)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
API_KEY = "reload-client-key-0123456789"
ADMIN_KEY = "reload-admin-key-0123456789"
# Scores between the two ceilings used below (the first response checks that it does).
PROMPT = "Prove step by step that the square root of 2 is irrational."
GENEROUS, STRICT = 0.9, 0.05


def fake_policy(
    *, cheap_max: float = GENEROUS, small: str = "small v1", big: str = "big v1"
) -> str:
    return f"""
version: 1
backends:
  small: {{type: fake, model: small-model, script: [{{reply: "{small}"}}]}}
  big: {{type: fake, model: big-model, script: [{{reply: "{big}"}}]}}
tiers:
  - {{name: cheap, max_score: {cheap_max}, backends: [small]}}
  - {{name: strong, backends: [big]}}
"""


def replace_file(path: Path, text: str) -> None:
    """Write the way editors do: a new file renamed over the old one."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text)
    os.replace(fresh, path)


def hash_of(path: Path) -> str:
    return load_policy(path).hash


def reload_counts(metrics_text: str) -> dict[tuple[str, str], float]:
    """tiergate_policy_reloads_total by (result, trigger)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tiergate_policy_reloads_total":
                counts[(sample.labels["result"], sample.labels["trigger"])] = sample.value
    return counts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command() -> list[str]:
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script, "serve"]
    return [sys.executable, "-c", "from gateway.cli.main import main; main()", "serve"]


class Server:
    """``tiergate serve`` on a free loopback port, its stderr (JSON lines) read as it comes."""

    def __init__(
        self,
        policy: Path,
        *,
        watch: bool,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.policy = policy
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        extra_env = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
        env.update(
            TIERGATE_POLICY=str(policy),
            TIERGATE_PORT=str(port),
            TIERGATE_HOST="127.0.0.1",
            TIERGATE_API_KEYS=f"tests:{API_KEY}",
            TIERGATE_ADMIN_KEY=ADMIN_KEY,
            TIERGATE_WATCH_POLICY="true" if watch else "false",
            TIERGATE_LOG_FORMAT="json",
            TIERGATE_WORKERS=str(workers),
            TIERGATE_DATABASE_URL=f"sqlite:///{policy.parent / 'ledger.db'}",
            TIERGATE_OUTBOX_PATH=str(policy.parent / "outbox.db"),
        )
        env.update(extra_env)
        self._events: list[dict[str, Any]] = []
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            _command(), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._read, name="server-log", daemon=True)
        self._reader.start()
        self.http = httpx.Client(base_url=self.base_url, timeout=10)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                with self._cond:
                    self._lines.append(line)
                    if isinstance(event, dict):
                        self._events.append(event)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def mark(self) -> int:
        """A position in the log; ``wait_for`` can look only at events after it."""
        with self._cond:
            return len(self._events)

    def wait_for(self, event: str, *, since: int = 0, **fields: object) -> dict[str, Any]:
        """The first log event named ``event`` (with these field values) after ``since``."""

        def find() -> dict[str, Any] | None:
            for item in self._events[since:]:
                if item.get("event") == event and all(item.get(k) == v for k, v in fields.items()):
                    return item
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self._eof, timeout=WAIT_S)
            found = find()
        if found is None:
            raise AssertionError(f"no {event!r} {fields} in the server log:\n{self.log()}")
        return found

    def events(self, event: str, *, since: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self._events[since:] if e.get("event") == event]

    def wait_count(self, event: str, count: int, *, since: int = 0) -> list[dict[str, Any]]:
        """Wait until ``count`` events named ``event`` appeared after ``since``."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    len([e for e in self._events[since:] if e.get("event") == event]) >= count
                    or self._eof
                ),
                timeout=WAIT_S,
            )
        found = self.events(event, since=since)
        if len(found) < count:
            raise AssertionError(f"{len(found)} {event!r} events, wanted {count}:\n{self.log()}")
        return found

    def wait_ready(self) -> None:
        self.wait_for("gateway_started")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/healthz").status_code == 200:
                    return
            # Between polls, wait on the process itself: a server that dies fails at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.05)
            assert self.proc.returncode is None, f"tiergate serve exited:\n{self.log()}"
        raise AssertionError(f"/healthz did not answer within {WAIT_S} s:\n{self.log()}")

    def chat(self, prompt: str = PROMPT) -> httpx.Response:
        response = self.http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 200, response.text
        return response

    def admin_reload(self) -> httpx.Response:
        return self.http.post(
            "/admin/policy/reload", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )

    def reloads(self) -> dict[tuple[str, str], float]:
        response = self.http.get("/metrics", headers={"authorization": f"Bearer {API_KEY}"})
        assert response.status_code == 200
        return reload_counts(response.text)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=WAIT_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

"""A real ``tiergate serve`` process on a free port, for end-to-end tests with the openai SDK."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e._tool_upstream import StubServer, stub_server

API_KEY = "e2e-client-key-0001"
ADMIN_KEY = "e2e-admin-key-0002"

POLICY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
  helper:
    type: fake
    model: helper-model
    script: [{reply: "A thorough answer from the strong tier."}]
tiers:
  - {name: tiny, max_score: 0.25, backends: [tiny]}
  - {name: strong, backends: [helper]}
routes:
  auto: {}
"""


@dataclass(frozen=True)
class Server:
    base_url: str
    log: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiergate_bin() -> str:
    found = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    assert found, "the tiergate entry point is not installed in this environment"
    return found


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"tiergate serve exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        process_wait(process, 0.1)
    raise RuntimeError(f"tiergate serve not ready after {limit_s} s:\n{log.read_text()}")


def process_wait(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait on the process itself (returns early if it dies) rather than sleeping blindly."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)


@contextlib.contextmanager
def serving(root: Path, policy_text: str) -> Iterator[Server]:
    """``tiergate serve`` in a subprocess on a free port with ``policy_text``, the API and admin
    keys and a SQLite ledger under ``root`` (no TIERGATE_* setting of this process leaks in)."""
    policy = root / "policy.yaml"
    policy.write_text(policy_text)
    log = root / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env.update(
        TIERGATE_POLICY=str(policy),
        TIERGATE_PORT=str(port),
        TIERGATE_HOST="127.0.0.1",
        TIERGATE_API_KEYS=f"e2e:{API_KEY}",
        TIERGATE_ADMIN_KEY=ADMIN_KEY,
        TIERGATE_DATABASE_URL=f"sqlite:///{root / 'ledger.db'}",
        TIERGATE_OUTBOX_PATH=str(root / "outbox.db"),
    )
    with log.open("wb") as sink:
        process = subprocess.Popen([tiergate_bin(), "serve"], env=env, stdout=sink, stderr=sink)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log, limit_s=60)
        yield Server(base_url, log, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The tool-capable set-up (tools, JSON mode, images, other wire formats): the tiny model, a
# text-only fake, and an OpenAI-compatible HTTP stub upstream (``_tool_upstream``).
TOOL_POLICY = """
version: 1
backends:
  tiny: {{type: tiny, model: default, n_ctx: 2048}}
  small:
    type: fake
    model: small-model
    capabilities: {{context_window: 1024, tools: false, json_mode: false, json_schema: false,
                   vision: false, embeddings: false}}
    script: [{{reply: "an answer from the small text-only backend"}}]
  agent:
    type: openai_compat
    model: stub-model
    base_url: {base_url}
    http_client: httpx
    capabilities: {{vision: true, context_window: 128000, embeddings: true}}
tiers:
  - {{name: tiny, max_score: 0.25, backends: [tiny]}}
  - {{name: local, max_score: 0.6, backends: [small]}}
  - {{name: strong, backends: [agent]}}
routes:
  auto: {{}}
  cheap: {{tier: tiny}}
"""


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Iterator[Server]:
    """``tiergate serve`` over ``TOOL_POLICY``, one per test module."""
    with serving(
        tmp_path_factory.mktemp("e2e_tools"), TOOL_POLICY.format(base_url=stub.base_url)
    ) as running:
        yield running


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("e2e"), POLICY) as running:
        yield running

"""The official Node SDKs (``openai``, ``@anthropic-ai/sdk``, pinned in ``package.json``) run
unchanged by ``node`` against a real ``tiergate serve``; each module starts one server and runs
its SDK's checks in one ``node`` process, whose JSON output the tests assert on.

``make sdk-js`` (a prerequisite of ``make unit``) installs the SDKs with ``npm ci``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._tool_upstream import StubServer, stub_server
from tests.e2e.conftest import API_KEY, Server, process_wait, serving

HERE = Path(__file__).parent
NODE_TIMEOUT_S = 90.0
SLOW_WORDS = 100
HELD_MS = 20_000
COOLDOWN_S = 2

# The tiny model and the tool-capable stub (as tests/e2e), plus scripted fakes the SDKs'
# retries and aborts need: one rate-limited once per two calls, one failing with an upstream
# 503 once per two calls, one that streams slowly and one that holds a whole answer. The
# gateway's own retries are off, so each failure reaches the SDK, and its response cache, so
# each answer is the backend's own. One failure opens a backend's breaker for COOLDOWN_S (rate
# limits and hang-ups are not failures).
POLICY = """
version: 1
backends:
  tiny: {{type: tiny, model: default, n_ctx: 2048}}
  agent:
    type: openai_compat
    model: stub-model
    base_url: {base_url}
    http_client: httpx
    capabilities: {{embeddings: true}}
  limited:
    type: fake
    model: limited-model
    script:
      - {{error: rate_limited, retry_after_s: 2}}
      - {{reply: "served once the limit passed"}}
  failing:
    type: fake
    model: failing-model
    script: [{{error: server_error}}, {{reply: "served after a 503"}}]
  slow:
    type: fake
    model: slow-model
    tokens_per_second: 10
    script: [{{reply: "{slow_reply}"}}]
  held:
    type: fake
    model: held-model
    script: [{{reply: "too late", delay_ms: {held_ms}}}]
tiers:
  - {{name: tiny, max_score: 0.25, backends: [tiny]}}
  - {{name: strong, backends: [agent]}}
routes:
  auto: {{}}
retries: {{per_backend: 0}}
breaker: {{failures: 1, cooldown_s: {cooldown_s}}}
cache: {{responses: {{enabled: false}}}}
"""


NODE_MAJOR = 20  # what @anthropic-ai/sdk 1.x and openai 6.x support


def node_bin() -> str:
    """The ``node`` on PATH; the test fails saying how to install it when there is none (or
    one too old for the SDKs)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            f"node is not installed: the Node SDK tests need Node.js {NODE_MAJOR} or later "
            "(Debian: sudo apt-get install nodejs npm; then make sdk-js)"
        )
    version = subprocess.run(
        [found, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR:
        pytest.fail(f"{found} is Node.js {version}: the Node SDK tests need {NODE_MAJOR} or later")
    return found


def sdk_installed() -> None:
    for package in ("openai", "@anthropic-ai/sdk"):
        if not (HERE / "node_modules" / package / "package.json").exists():
            pytest.fail(
                f"the Node SDK {package!r} is not installed in {HERE / 'node_modules'}: "
                "run `make sdk-js` (npm ci from the committed package-lock.json)"
            )


def installed_and_pinned(package: str) -> tuple[str, str]:
    """The version of ``package`` in node_modules and the one package.json pins."""
    installed = json.loads((HERE / "node_modules" / package / "package.json").read_text())
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"][package]
    return str(installed["version"]), str(pinned)


def run_node(script: str, server: Server, *checks: str) -> dict[str, Any]:
    """Run ``script``'s checks against ``server``; their results by name."""
    env = {**os.environ, "TIERGATE_URL": server.base_url, "TIERGATE_KEY": API_KEY}
    done = subprocess.run(
        [node_bin(), str(HERE / script), *checks],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"node {script} exited {done.returncode}:\n{done.stderr}"
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def passed(results: dict[str, Any], check: str) -> dict[str, Any]:
    """One check's result; the test fails with the script's error when the check threw."""
    result: dict[str, Any] = results[check]
    assert "failed" not in result, f"{check} threw in node:\n{result['failed']}"
    return result


def ledger_row(root: Path, server: Server, what: str, **fields: object) -> dict[str, Any]:
    """The first ledger row with these field values, once the server has written it."""
    deadline = time.monotonic() + 15.0
    query = "SELECT * FROM ledger_requests WHERE " + " AND ".join(f"{name} = ?" for name in fields)
    while time.monotonic() < deadline:
        if (root / "ledger.db").exists():
            with sqlite3.connect(f"file:{root / 'ledger.db'}?mode=ro", uri=True) as db:
                db.row_factory = sqlite3.Row
                try:
                    found = db.execute(query, tuple(fields.values())).fetchone()
                except sqlite3.OperationalError:  # the schema is not there yet
                    found = None
            if found is not None:
                return dict(found)
        process_wait(server.process, 0.1)
    pytest.fail(f"no ledger row for {what} ({fields}) within 15 s")


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdk_js")


@pytest.fixture(scope="module")
def gateway(root: Path, stub: StubServer) -> Iterator[Server]:
    """``tiergate serve`` over ``POLICY``, one per test module."""
    node_bin()
    sdk_installed()
    policy = POLICY.format(
        base_url=stub.base_url,
        slow_reply=" ".join(f"word{i}" for i in range(SLOW_WORDS)),
        held_ms=HELD_MS,
        cooldown_s=COOLDOWN_S,
    )
    with serving(root, policy) as running:
        yield running

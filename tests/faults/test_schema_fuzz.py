"""Every public route, as ``/openapi.json`` describes it, fuzzed by schemathesis against a real
``tiergate serve`` (scripted backends, SQLite ledger): no input makes the server answer 5xx.
Inputs the schema allows and inputs it does not (schemathesis sends both) must each get an
answer in the API's format: 2xx, or a 4xx naming what was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.http.live_server import ADMIN_KEY, API_KEY, Server

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "a short answer"}]}
  big: {type: fake, model: big-model, script: [{reply: "a longer answer"}]}
  vectors: {type: fake, model: embed-model, capabilities: {chat: false, embeddings: true}}
tiers:
  - {name: cheap, max_score: 0.4, backends: [small, vectors]}
  - {name: strong, backends: [big]}
"""
EXAMPLES = 40
Operation = APIOperation[Any, Any, Any, Any]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policy: Path = tmp_path_factory.mktemp("fuzz") / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, watch=False)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def fuzz(operation: Operation, base_url: str, key: str, mode: GenerationMode) -> None:
    """``EXAMPLES`` generated calls of ``operation``; fails on the first 5xx."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same inputs every run: CI cannot turn red by chance
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Case[Operation]) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers={"authorization": f"Bearer {key}"},
            checks=[not_a_server_error],
            timeout=30,
        )

    call()


def test_no_input_is_a_server_error(fuzzed_server: Server) -> None:
    schema = schemathesis.openapi.from_url(
        f"{fuzzed_server.base_url}/openapi.json",
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    fuzzed: list[str] = []
    negative: list[str] = []
    for loaded in schema.get_all_operations():
        assert isinstance(loaded, Ok), loaded  # the schema itself is valid
        operation = loaded.ok()
        key = ADMIN_KEY if operation.path.startswith("/admin") else API_KEY
        fuzz(operation, fuzzed_server.base_url, key, GenerationMode.POSITIVE)
        try:
            fuzz(operation, fuzzed_server.base_url, key, GenerationMode.NEGATIVE)
        except Unsatisfiable:
            pass  # nothing to get wrong: no parameters and no body
        else:
            negative.append(f"{operation.method.upper()} {operation.path}")
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    print("figures: operations=" + ", ".join(fuzzed))
    print("figures: with invalid inputs too=" + ", ".join(negative))
    public = {"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings"}
    assert public <= set(fuzzed)
    assert public <= set(negative)

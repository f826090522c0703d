"""Clients see backend names and error classes; the backends' addresses and the environment
variables an operator should check stay in the gateway's log (with the request id)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import respx
from structlog.testing import capture_logs

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
KEY_VAR = "TIERGATE_TEST_UPSTREAM_KEY"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_upstream_is_named_but_not_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-test-0123456789")
    port = closed_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
backends:
  upstream:
    type: openai_compat
    model: m
    base_url: "http://127.0.0.1:{port}/v1"
    api_key_env: {KEY_VAR}
tiers:
  - {{name: only, backends: [upstream]}}
"""
    )
    with capture_logs() as logs:
        async with gateway(policy, ledger=False) as (client, _app):
            response = await client.post(CHAT, json=BODY)
    assert response.status_code == 503
    text = response.text
    assert "upstream" in response.json()["error"]["message"]  # the backend, by name
    for internal in ("127.0.0.1", str(port), "/v1", KEY_VAR):
        assert internal not in text
    logged = [e for e in logs if e["event"] == "dispatch_failed"]
    assert [e["request_id"] for e in logged] == [response.headers["x-request-id"]]
    assert f"127.0.0.1:{port}" in logged[0]["detail"]  # the operator's view keeps it


UNRESOLVABLE = "llm.nowhere.example"


@pytest.mark.parametrize(
    "base_url", [f"http://{UNRESOLVABLE}:8080/v1", f"https://{UNRESOLVABLE}/v1"]
)
async def test_a_host_name_that_does_not_resolve_is_unreachable_not_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_url: str
) -> None:
    """A DNS failure (the default aiohttp transport) is a connection failure, a 503 like a
    refused connection, not a 504 "no answer within timeout_s"; the host stays in the log."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host == UNRESOLVABLE:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
backends:
  upstream: {{type: openai_compat, model: m, base_url: "{base_url}"}}
tiers:
  - {{name: only, backends: [upstream]}}
"""
    )
    with capture_logs() as logs:
        async with gateway(policy, ledger=False) as (client, _app):
            response = await client.post(CHAT, json=BODY)
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    assert "upstream" in message
    assert "does not resolve" in message
    assert "timeout_s" not in message
    assert "nowhere" not in response.text
    logged = [e for e in logs if e["event"] == "dispatch_failed"]
    assert UNRESOLVABLE in logged[0]["detail"]


async def test_a_disabled_backend_does_not_name_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
backends:
  remote: {{type: remote, model: openai/gpt-4o-mini, api_key_env: {KEY_VAR}}}
tiers:
  - {{name: only, backends: [remote]}}
"""
    )
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post(CHAT, json=BODY)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_backend_available"
    assert "remote" in error["message"]
    assert "disabled" in error["message"]
    assert KEY_VAR not in response.text


async def test_a_stream_broken_mid_way_does_not_leak_the_backends_advice(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
version: 1
backends:
  small: {type: fake, model: small-model}
tiers:
  - {name: only, backends: [small]}
"""
    )
    small = FakeBackend.scripted(
        "small", FakeStep(reply="one two three", error="unauthorized", fail_after_chunks=1)
    )
    with capture_logs() as logs:
        async with gateway(policy, backends={"small": small}, ledger=False) as (client, _app):
            response = await client.post(CHAT, json={**BODY, "stream": True})
    events = [
        line.removeprefix("data: ")
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted"
    assert "FAKE_API_KEY" not in response.text
    assert "unauthorized" in error["message"]  # the class of failure stays
    logged = [e for e in logs if e["event"] == "backend_error"]
    assert "FAKE_API_KEY" in logged[0]["detail"]


async def test_readyz_gives_clients_the_states_and_operators_the_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz with a client key: each backend's state, no reason (an Ollama's address, the
    variable that would enable a backend); with the admin key, the reasons too."""
    monkeypatch.delenv(KEY_VAR, raising=False)
    port = closed_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
backends:
  small: {{type: fake, model: small-model}}
  local: {{type: ollama, model: "llama3.2:3b", base_url: "http://127.0.0.1:{port}"}}
  hosted: {{type: openai_compat, model: m, base_url: "http://127.0.0.1:{port}/v1",
            api_key_env: {KEY_VAR}}}
tiers:
  - {{name: cheap, max_score: 0.3, backends: [small]}}
  - {{name: mid, backends: [local, hosted]}}
"""
    )
    keys = gateway(policy, ledger=False, api_keys="app:k-app-1111", admin_key="k-admin-3333")
    async with keys as (client, app):
        await app.state.runtime.active.pool.probe_all()
        seen = await client.get("/readyz", headers={"authorization": "Bearer k-app-1111"})
        full = await client.get("/readyz", headers={"authorization": "Bearer k-admin-3333"})
    assert seen.status_code == full.status_code == 200
    assert seen.json()["status"] == full.json()["status"] == "degraded"
    for name in ("small", "local", "hosted"):
        client_view, operator_view = seen.json()["backends"][name], full.json()["backends"][name]
        assert client_view["detail"] is None
        assert {**client_view, "detail": None} == {**operator_view, "detail": None}
    assert seen.json()["cache"]["detail"] is None
    assert "operators" in seen.json()["detail"]
    for internal in ("127.0.0.1", str(port), KEY_VAR):
        assert internal not in seen.text
    assert "ollama serve" in full.json()["backends"]["local"]["detail"]
    assert f"127.0.0.1:{port}" in full.text
    assert KEY_VAR in full.json()["backends"]["hosted"]["detail"]
    assert "detail" not in full.json()


async def test_client_errors_name_no_setting(tmp_path: Path) -> None:
    """The errors a client key can meet when the operator's settings say no (body limit, no
    admin key, no ledger for feedback) say what happened without naming a variable."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nbackends:\n  small: {type: fake}\n"
        "tiers:\n  - {name: only, backends: [small]}\n"
    )
    auth = {"authorization": "Bearer k-app-1111"}
    async with gateway(policy, ledger=False, api_keys="k-app-1111", max_body_bytes=1024) as (
        client,
        _app,
    ):
        big = await client.post(CHAT, json={**BODY, "user": "x" * 2000}, headers=auth)
        admin = await client.get("/admin/policy", headers=auth)
        rated = await client.post(
            "/v1/feedback", json={"request_id": "r-1", "score": 1.0}, headers=auth
        )
    assert (big.status_code, admin.status_code, rated.status_code) == (413, 403, 400)
    assert "1024 bytes" in big.json()["error"]["message"]
    assert "no admin key" in admin.json()["error"]["message"]
    assert "without its ledger" in rated.json()["error"]["message"]
    for response in (big, admin, rated):
        assert "TIERGATE_" not in response.text


async def test_a_model_file_that_will_not_load_is_named_but_not_located(
    tmp_path: Path,
) -> None:
    """The in-process model's file is the gateway host's: a client learns that the tiny backend
    could not load its model, not where the file lies (the log keeps the path)."""
    folder = tmp_path / "private-models"
    folder.mkdir()
    gguf = folder / "broken.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 8)  # not a model llama.cpp can read
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
version: 1
backends:
  tiny: {{type: tiny, model: "{gguf}"}}
tiers:
  - {{name: only, backends: [tiny]}}
"""
    )
    anthropic = {"model": "auto", "max_tokens": 5, "messages": BODY["messages"]}
    with capture_logs() as logs:
        async with gateway(policy, ledger=False) as (client, _app):
            chat = await client.post(CHAT, json=BODY)
            messages = await client.post("/v1/messages", json=anthropic)
            listed = await client.get("/v1/models")
    assert listed.status_code == 200
    assert "broken.gguf" in listed.text  # the model, by its file's name...
    assert "private-models" not in listed.text  # ...not where it lies
    for response in (chat, messages):
        assert response.status_code == 503, response.text
        assert "tiny" in response.text
        assert "could not load" in response.text
        assert "private-models" not in response.text
        assert "broken.gguf" not in response.text
    assert any(str(gguf) in e.get("detail", "") for e in logs if e["event"] == "dispatch_failed")


async def test_an_upstreams_own_words_lose_its_hosts_and_paths(tmp_path: Path) -> None:
    """A client is told what the upstream said, without the host names, ports and file paths
    in it (an upstream's error text is written for its operator, not for the gateway's
    clients); the log line keeps them."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
version: 1
backends:
  upstream:
    type: openai_compat
    model: m
    base_url: "http://upstream.test/v1"
    http_client: httpx
tiers:
  - {name: only, backends: [upstream]}
"""
    )
    said = (
        "model m failed: cannot reach tokenizer at tok-cache.internal.example:6379, "
        "see /srv/inference/app/handler.py or /models/m.gguf"
    )
    with respx.mock(assert_all_called=False) as router, capture_logs() as logs:
        router.get("http://upstream.test/v1/models").respond(200, json={"data": []})
        router.post("http://upstream.test/v1/chat/completions").respond(
            400, json={"error": {"message": said, "type": "invalid_request_error"}}
        )
        async with gateway(policy, ledger=False) as (client, _app):
            response = await client.post(CHAT, json=BODY)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "model m failed: cannot reach tokenizer" in message  # the upstream's words stay
    for internal in (
        "tok-cache.internal.example",
        "6379",
        "/srv/inference",
        "handler.py",
        "m.gguf",
    ):
        assert internal not in message
    assert any(said in e.get("detail", "") for e in logs if e["event"] == "dispatch_failed")

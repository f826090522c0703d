"""SIGTERM during a stream: a real ``tiergate serve`` drains requests in flight for
TIERGATE_DRAIN_S, then stops what is left and exits cleanly, every line of its log JSON (a log
pipeline reads one object a line). A stream still open when the drain runs out is not just cut:
a little before the deadline the gateway ends it with a last error event in the words of the
API it came through (the gateway is shutting down: retry), and its ledger row says 503
``shutting_down``. The manifests set the drain from the policy's ``timeouts.total_s`` and the
grace period from it (test_kubernetes.py, test_compose.py); here, that the server honours it.
A request whose backend has not answered when the drain runs out (a whole answer, or a stream
before its first chunk) gets a 503 in its API's words instead (shutting down: retry, with
``retry-after``), and its row says 503 ``shutting_down`` too. Paced by the fake backend or an
upstream that never answers, waiting on the stream, the upstream and the process, never
sleeping."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.live_server import API_KEY, WAIT_S, Server
from tests.support.held_upstream import HeldUpstream

WORDS = 40
REPLY = " ".join(f"w{i}" for i in range(WORDS))
# 40 words at 4 a second: a stream of about 10 s, far longer than the 1 s drain below and far
# shorter than the 30 s default.
POLICY = f"""
version: 1
backends:
  slow: {{type: fake, model: slow-model, tokens_per_second: 4, script: [{{reply: "{REPLY}"}}]}}
tiers:
  - {{name: only, backends: [slow]}}
"""
MESSAGES = [{"role": "user", "content": "hi"}]


def _data(line: str) -> dict[str, Any] | None:
    if not line.startswith("data: {"):
        return None
    parsed: dict[str, Any] = json.loads(line.removeprefix("data: "))
    return parsed


def _chat_started(line: str) -> bool:
    data = _data(line)
    return bool(data and data.get("choices") and data["choices"][0]["delta"].get("content"))


def _messages_started(line: str) -> bool:
    data = _data(line)
    return bool(data and data.get("type") == "content_block_delta")


def _responses_started(line: str) -> bool:
    data = _data(line)
    return bool(data and data.get("type") == "response.output_text.delta")


def _chat_error(data: dict[str, Any]) -> str:
    """OpenAI's mid-stream error chunk (the openai SDK raises it as an APIError)."""
    error = data["error"]
    assert error["type"] == "service_unavailable", data
    assert error["code"] == "server_shutting_down", data
    message: str = error["message"]
    return message


def _messages_error(data: dict[str, Any]) -> str:
    """Anthropic's ``event: error`` (503: overloaded_error, which its SDK retries)."""
    assert data["type"] == "error", data
    assert data["error"]["type"] == "overloaded_error", data
    message: str = data["error"]["message"]
    return message


def _responses_error(data: dict[str, Any]) -> str:
    """The Responses API's ``error`` event."""
    assert data["type"] == "error", data
    assert data["code"] == "server_shutting_down", data
    message: str = data["message"]
    return message


APIS: dict[str, tuple[str, dict[str, Any], Callable[[str], bool], Callable[..., str]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": "auto", "stream": True, "messages": MESSAGES},
        _chat_started,
        _chat_error,
    ),
    "messages": (
        "/v1/messages",
        {"model": "auto", "stream": True, "max_tokens": 100, "messages": MESSAGES},
        _messages_started,
        _messages_error,
    ),
    "responses": (
        "/v1/responses",
        {"model": "auto", "stream": True, "input": "hi"},
        _responses_started,
        _responses_error,
    ),
}


def _cut_stream(server: Server, api: str) -> tuple[list[str], str, int]:
    """A stream of ``api`` cut by SIGTERM's drain: its lines, its request id, the exit code."""
    path, body, started, _ = APIS[api]
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{server.base_url}{path}",
        json=body,
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=WAIT_S,
    ) as response:
        assert response.status_code == 200, response.read()
        request_id = response.headers["x-request-id"]
        received = response.iter_lines()
        for line in received:
            lines.append(line)
            if started(line):
                break  # the stream is under way: now the signal
        server.proc.send_signal(signal.SIGTERM)
        # The stream ends, not the connection cut: reading it to its end raises nothing.
        lines.extend(received)
    try:
        code = server.proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after SIGTERM:\n{server.log()}") from None
    return lines, request_id, code


def _ledger_row(server: Server, request_id: str) -> tuple[int, str | None, bool]:
    with sqlite3.connect(server.policy.parent / "ledger.db") as db:
        row = db.execute(
            "SELECT status, error_class, stream FROM ledger_requests WHERE id = ?", (request_id,)
        ).fetchone()
    assert row is not None, f"no ledger row for {request_id}:\n{server.log()}"
    return int(row[0]), row[1], bool(row[2])


def _check_cut(server: Server, api: str, lines: list[str], request_id: str, code: int) -> None:
    log = server.log()
    # Cut after the drain, not run to its end (the default drain, 30 s, would have let it).
    assert "data: [DONE]" not in lines, log
    events = [data for data in map(_data, lines) if data is not None]
    assert len(events) < WORDS, log
    # Its last event says why it ends, in the API's own words, and what to do.
    message = APIS[api][3](events[-1])
    assert "shutting down" in message, message
    assert "retry" in message, message
    assert code in (0, -signal.SIGTERM), log
    assert server.events("gateway_stopped"), log
    assert _ledger_row(server, request_id) == (503, "shutting_down", True), log
    # uvicorn's records are JSON lines too; and the stream ended before uvicorn's own cut, so
    # no task was cancelled and no traceback logged.
    not_json = [line for line in log.splitlines() if not _json_object(line)]
    assert not_json == [], log
    records = [json.loads(line) for line in log.splitlines()]
    assert not [r for r in records if str(r["event"]).startswith("Exception in ASGI")], log
    assert not [r for r in records if "timeout graceful shutdown" in str(r["event"])], log


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_sigterm_drains_for_tiergate_drain_s_then_ends_the_stream(
    tmp_path: Path, workers: int
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, watch=False, workers=workers, env={"TIERGATE_DRAIN_S": "1"})
    try:
        server.wait_ready()
        lines, request_id, code = _cut_stream(server, "chat")
    finally:
        server.stop()
    _check_cut(server, "chat", lines, request_id, code)


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_a_stream_the_drain_ends_says_so_in_its_apis_words(tmp_path: Path, api: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, watch=False, env={"TIERGATE_DRAIN_S": "1"})
    try:
        server.wait_ready()
        lines, request_id, code = _cut_stream(server, api)
    finally:
        server.stop()
    _check_cut(server, api, lines, request_id, code)


def _held_policy(upstream: HeldUpstream) -> str:
    return (
        "version: 1\n"
        "backends:\n"
        f"  held: {{type: openai_compat, model: {upstream.MODEL}, "
        f'base_url: "{upstream.base_url}"}}\n'
        "tiers:\n"
        "  - {name: only, backends: [held]}\n"
    )


def _openai_refusal(body: dict[str, Any]) -> str:
    """OpenAI's error object (chat completions, Responses): a 503 the SDKs retry."""
    assert body["error"]["type"] == "service_unavailable", body
    assert body["error"]["code"] == "server_shutting_down", body
    message: str = body["error"]["message"]
    return message


def _anthropic_refusal(body: dict[str, Any]) -> str:
    """Anthropic's error object: a 503 is its ``overloaded_error`` (the SDK retries it)."""
    assert body["type"] == "error", body
    assert body["error"]["type"] == "overloaded_error", body
    message: str = body["error"]["message"]
    return message


# A whole answer through each API, and a stream whose backend never sent its first chunk.
HELD: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": MESSAGES}, _openai_refusal),
    "messages": (
        "/v1/messages",
        {"model": "auto", "max_tokens": 100, "messages": MESSAGES},
        _anthropic_refusal,
    ),
    "responses": ("/v1/responses", {"model": "auto", "input": "hi"}, _openai_refusal),
    "chat-stream": (
        "/v1/chat/completions",
        {"model": "auto", "stream": True, "messages": MESSAGES},
        _openai_refusal,
    ),
}


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_requests_the_drain_ends_before_their_answer_get_a_503_in_their_apis_words(
    tmp_path: Path, workers: int
) -> None:
    """Requests still waiting on their backend when the drain runs out are answered, not cut:
    a 503 in the words of the API each came through (shutting down, retry), ``retry-after``,
    and each request's row says 503 ``shutting_down``."""
    async with HeldUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(_held_policy(upstream))
        server = Server(policy, watch=False, workers=workers, env={"TIERGATE_DRAIN_S": "1"})
        try:
            await asyncio.to_thread(server.wait_ready)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S) as http:

                async def ask(path: str, body: dict[str, Any]) -> httpx.Response | str:
                    headers = {"authorization": f"Bearer {API_KEY}"}
                    try:
                        return await http.post(path, json=body, headers=headers)
                    except httpx.TransportError as exc:
                        return f"{type(exc).__name__}: {exc}"

                asked = {
                    name: asyncio.create_task(ask(path, body))
                    for name, (path, body, _) in HELD.items()
                }
                await upstream.until_held(len(asked))  # every one is with the backend now
                server.proc.send_signal(signal.SIGTERM)
                answers = {name: await task for name, task in asked.items()}
            code = await asyncio.to_thread(server.proc.wait, WAIT_S)
        finally:
            server.stop()
    log = server.log()
    for name, answer in answers.items():
        assert isinstance(answer, httpx.Response), f"{name}: {answer}\n{log}"
        assert answer.status_code == 503, (name, answer.text)
        assert int(answer.headers["retry-after"]) >= 1, (name, answer.headers)
        message = HELD[name][2](answer.json())
        assert "shutting down" in message, message
        assert "retry" in message, message
        row = _ledger_row(server, answer.headers["x-request-id"])
        assert row == (503, "shutting_down", name == "chat-stream"), (name, log)
    assert code in (0, -signal.SIGTERM), log
    assert server.events("gateway_stopped"), log
    records = [json.loads(line) for line in log.splitlines() if _json_object(line)]
    assert not [r for r in records if str(r["event"]).startswith("Exception in ASGI")], log
    assert not [r for r in records if "timeout graceful shutdown" in str(r["event"])], log


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False

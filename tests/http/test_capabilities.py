"""Capabilities through the in-process gateway with scripted backends: tool calls in OpenAI's
shape (whole and streamed), the response cache kept out of tool requests, the needs recorded
in the ledger, the admin explain, and /v1/embeddings."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from adapters.config import FakeStep, FakeToolCall
from adapters.fake import FakeBackend
from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  plain:
    type: fake
    model: plain-model
    capabilities: {tools: false, json_mode: false, vision: false, embeddings: false}
  agent: {type: fake, model: agent-model}
tiers:
  - {name: cheap, max_score: 0.5, backends: [plain]}
  - {name: strong, backends: [agent]}
"""
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
ASK = [{"role": "user", "content": "Look it up please."}]
CALL = FakeStep(reply="", tool_calls=(FakeToolCall(name="lookup", arguments='{"q": "x"}'),))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def backends() -> dict[str, FakeBackend]:
    return {
        "plain": FakeBackend.scripted("plain", "plain answer"),
        "agent": FakeBackend.scripted("agent", CALL),
    }


async def test_tool_call_answer_in_openai_shape(policy_file: Path) -> None:
    """The tool-capable backend answers; its call comes back as message.tool_calls with
    content null and finish_reason tool_calls."""
    fakes = backends()
    async with gateway(policy_file, backends=fakes) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"messages": ASK, "tools": TOOLS, "temperature": 0}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-tiergate-backend"] == "agent"
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_fake_0",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    sent = fakes["agent"].requests[-1]
    assert sent.tools[0].name == "lookup"
    assert fakes["plain"].requests == []


async def test_streamed_tool_call_events(policy_file: Path) -> None:
    """Streamed, the call is a delta.tool_calls event (id, type, name, arguments), then the
    finish event says tool_calls."""
    async with gateway(policy_file, backends=backends()) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"messages": ASK, "tools": TOOLS, "stream": True}
        )
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    pieces = [
        call for e in events for c in e["choices"] for call in c["delta"].get("tool_calls", [])
    ]
    assert pieces == [
        {
            "index": 0,
            "id": "call_fake_0",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_streamed_tool_calls_of_two_choices(policy_file: Path) -> None:
    """n=2 streamed with tools: each choice's call arrives as delta.tool_calls under its own
    choice index, and each choice ends with finish_reason tool_calls."""
    async with gateway(policy_file, backends=backends()) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={"messages": ASK, "tools": TOOLS, "stream": True, "n": 2},
        )
    assert response.status_code == 200, response.text
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    calls: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    finished: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            calls[choice["index"]] += choice["delta"].get("tool_calls", [])
            if choice["finish_reason"] is not None:
                finished[choice["index"]] = choice["finish_reason"]
    for index in (0, 1):
        assert [(c["id"], c["function"]["name"]) for c in calls[index]] == [
            ("call_fake_0", "lookup")
        ]
    assert finished == {0: "tool_calls", 1: "tool_calls"}


async def test_tool_requests_skip_the_response_cache(policy_file: Path) -> None:
    """The same deterministic request with tools reaches the backend each time (a cached text
    cannot stand for a tool call), while a JSON-mode request is cached apart from plain text."""
    fakes = backends()
    async with gateway(policy_file, backends=fakes) as (client, app):
        for _ in range(2):
            tool = await client.post(
                "/v1/chat/completions",
                json={"messages": ASK, "tools": TOOLS, "temperature": 0},
            )
            assert tool.headers["x-tiergate-cache"] == "off"
            await app.state.cache.flush()
        fakes["agent"].enqueue('{"a": 1}', '{"a": 1}')
        json_mode = {"messages": ASK, "temperature": 0, "response_format": {"type": "json_object"}}
        first = await client.post("/v1/chat/completions", json=json_mode)
        await app.state.cache.flush()  # the write happens in the background
        second = await client.post("/v1/chat/completions", json=json_mode)
        plain = await client.post("/v1/chat/completions", json={"messages": ASK, "temperature": 0})
    assert len(fakes["agent"].requests) == 3
    assert first.headers["x-tiergate-cache"] == "miss"
    assert second.headers["x-tiergate-cache"] == "hit"
    assert plain.headers["x-tiergate-backend"] == "plain"


async def test_needs_reach_the_ledger_and_the_report(policy_file: Path) -> None:
    """Each row records what its request needed; the report by capability counts a request in
    each of its needs, and plain requests under `plain`."""
    fakes = backends()
    fakes["agent"].enqueue(CALL, '{"ok": true}')
    async with gateway(policy_file, backends=fakes) as (client, _):
        await client.post(
            "/v1/chat/completions",
            json={"messages": ASK, "tools": TOOLS, "response_format": {"type": "json_object"}},
        )
        await client.post("/v1/chat/completions", json={"messages": ASK})
        report = await client.get("/admin/report", params={"since": "1d", "by": "capability"})
    assert report.status_code == 200, report.text
    groups = {g["key"]: g["requests"] for g in report.json()["groups"]}
    assert groups == {"tools": 1, "json_mode": 1, "plain": 1}


async def test_admin_explain_shows_the_filter(policy_file: Path) -> None:
    async with gateway(policy_file, backends=backends()) as (client, _):
        response = await client.post(
            "/admin/policy/explain", json={"messages": ASK, "tools": TOOLS}
        )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["needs"] == ["tools"]
    assert result["tier"] == "strong"
    assert result["excluded"] == ["plain: lacks tools"]
    assert [c["backend"] for c in result["candidates"]] == ["agent"]


async def test_embeddings_in_float_and_base64(policy_file: Path) -> None:
    """/v1/embeddings goes to the embedding backend; base64 packs the same float32 values."""
    async with gateway(policy_file, backends=backends()) as (client, _):
        floats = await client.post(
            "/v1/embeddings", json={"input": ["a b", "c"], "encoding_format": "float"}
        )
        packed = await client.post(
            "/v1/embeddings", json={"input": ["a b", "c"]} | {"encoding_format": "base64"}
        )
        bad = await client.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
    assert floats.status_code == 200, floats.text
    assert floats.headers["x-tiergate-backend"] == "agent"
    body = floats.json()
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vectors = [d["embedding"] for d in body["data"]]
    assert len(vectors) == 2
    assert len(vectors[0]) == 8
    decoded = [
        list(struct.unpack("<8f", base64.b64decode(d["embedding"]))) for d in packed.json()["data"]
    ]
    assert decoded == [pytest.approx(v, abs=1e-6) for v in vectors]
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "input"


async def test_n_choices_come_from_the_chosen_backend(policy_file: Path) -> None:
    """n=3 gives three choices, indexed, from the backend that answered the first (asked
    three times, seeds varied), with the usage of all three calls; never from the cache."""
    fakes = backends()
    fakes["plain"].enqueue("one", "two", "three")
    async with gateway(policy_file, backends=fakes) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"messages": ASK, "n": 3, "seed": 10, "temperature": 0}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-tiergate-cache"] == "off"
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["one", "three", "two"]
    assert sorted(r.seed or 0 for r in fakes["plain"].requests) == [10, 11, 12]
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["prompt_tokens"] == 3 * 4

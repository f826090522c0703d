"""``/v1/messages`` in-process, with scripted backends and the real tiny model: the
translation of Anthropic's blocks, the event sequence of a stream, stop sequences and usage as
the ``anthropic`` SDK reads them, refusals in Anthropic's shape, and the same request through
chat and messages reaching the same backend at the same cost."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx2
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from adapters.remote.loader import load_litellm
from gateway.http.anthropic_in import MAX_STOP_SEQUENCES
from gateway.ledger.models import RequestRow
from tests.adapters.remote.test_backend import ANTHROPIC_MESSAGE, ANTHROPIC_URL
from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
tiers:
  - {name: only, backends: [small]}
pricing:
  backends:
    small: {usd_per_1m_input: 1.0, usd_per_1m_output: 2.0}
"""
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5E"
    "rkJggg=="
)
HEADERS = {"anthropic-version": "2023-06-01"}
TINY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
tiers:
  - {name: only, backends: [tiny]}
"""
COUNT = "Count from 1 to 10, separated by commas."


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def recorded_apis(engine: Engine) -> dict[str, str | None]:
    with Session(engine) as session:
        return {row.id: row.api for row in session.scalars(select(RequestRow))}


def sdk(app: FastAPI) -> anthropic.AsyncAnthropic:
    """The official SDK, talking to the in-process app (through the ``httpx2`` the SDK uses)."""
    transport = httpx2.ASGITransport(app=app)
    client = httpx2.AsyncClient(transport=transport, base_url="http://gw")
    return anthropic.AsyncAnthropic(
        base_url="http://gw", api_key="unused", http_client=client, max_retries=0
    )


def events(text: str) -> list[tuple[str, dict[str, object]]]:
    """(event name, data) of a server-sent event stream."""
    out: list[tuple[str, dict[str, object]]] = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_blocks_become_the_chat_the_backend_sees(policy: Path) -> None:
    small = FakeBackend.scripted("small", "seen")
    body = {
        "model": "auto",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                ],
            }
        ],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }
    async with gateway(policy, backends={"small": small}, ledger=False) as (client, _app):
        response = await client.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    sent = small.requests[-1]
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "Be brief."),
        ("user", "What is in this picture?"),
    ]
    assert sent.messages[1].images[0].url == f"data:image/png;base64,{PIXEL}"
    assert (sent.stop, sent.user, sent.max_tokens) == (("END",), "u-42", 20)
    message = response.json()
    assert message["content"] == [{"type": "text", "text": "seen"}]
    assert message["stop_reason"] == "end_turn"


async def test_a_stream_follows_anthropics_event_sequence(policy: Path) -> None:
    small = FakeBackend.scripted("small", "one two three")
    body = {
        "model": "auto",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "count"}],
    }
    async with gateway(policy, backends={"small": small}, ledger=False) as (client, _app):
        response = await client.post("/v1/messages", json=body, headers=HEADERS)
    assert response.headers["content-type"].startswith("text/event-stream")
    seen = events(response.text)
    names = [name for name, _ in seen]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(
        str(data["delta"]["text"])  # type: ignore[index]
        for name, data in seen
        if name == "content_block_delta"
    )
    assert text == "one two three"
    delta = dict(seen[-2][1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


async def test_unsupported_blocks_are_refused_in_anthropics_shape(policy: Path) -> None:
    body = {
        "model": "auto",
        "max_tokens": 20,
        "messages": [
            {"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}
        ],
    }
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post("/v1/messages", json=body, headers=HEADERS)
        missing = await client.post(
            "/v1/messages", json={"model": "auto", "messages": []}, headers=HEADERS
        )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in error["error"]["message"]
    assert "'document'" in error["error"]["message"]
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"


async def test_a_flood_of_stop_sequences_is_refused_naming_the_field(policy: Path) -> None:
    """Every stop sequence is looked for after every generated token (on the in-process model,
    by the gateway's own CPU): a body full of them, unchecked, slowed each token of its answer
    many times over. Like chat's `stop`, the list is bounded."""
    backend = FakeBackend.scripted("small", "one two three")
    body = {
        "model": "auto",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": [f"s{i}" for i in range(10_000)],
    }
    async with gateway(policy, backends={"small": backend}, ledger=False) as (client, _app):
        response = await client.post("/v1/messages", json=body, headers=HEADERS)
        body["stop_sequences"] = [f"s{i}" for i in range(MAX_STOP_SEQUENCES)]
        allowed = await client.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("stop_sequences: ")
    assert str(MAX_STOP_SEQUENCES) in error["error"]["message"]
    assert allowed.status_code == 200, allowed.text
    assert len(backend.requests) == 1


async def test_count_tokens_takes_any_json_schema(policy: Path) -> None:
    """A tool schema may hold integers past 64 bits (found by the schema fuzzer: a 500)."""
    tool = {"name": "big", "input_schema": {"type": "integer", "maximum": 2**70}}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 0


async def test_a_remote_anthropic_model_is_called_with_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through litellm, a remote Anthropic model gets Anthropic's own Messages call (mocked at
    the HTTP layer), and its usage comes back in Anthropic's terms."""
    lib = load_litellm()
    monkeypatch.setattr(lib, "disable_aiohttp_transport", True)  # else respx sees nothing
    monkeypatch.setenv("TIERGATE_TEST_ANTHROPIC_KEY", "sk-ant-test-0123456789")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
version: 1
backends:
  claude:
    type: remote
    model: anthropic/claude-haiku-4-5-20251001
    api_key_env: TIERGATE_TEST_ANTHROPIC_KEY
tiers:
  - {name: remote, backends: [claude]}
"""
    )
    body = {
        "model": "auto",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi, who are you?"}],
    }
    with respx.mock(assert_all_mocked=False) as router:
        upstream = router.post(ANTHROPIC_URL).respond(200, json=ANTHROPIC_MESSAGE)
        async with gateway(policy, ledger=False) as (client, _app):
            response = await client.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    sent = json.loads(upstream.calls.last.request.content)
    assert "Be brief." in json.dumps(sent["system"])
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert "Hi, who are you?" in json.dumps(sent["messages"])
    assert sent["max_tokens"] == 50
    answer = response.json()
    assert answer["content"] == [{"type": "text", "text": "Hi! My name is Claude."}]
    assert answer["usage"]["input_tokens"] == 10
    assert answer["usage"]["cache_read_input_tokens"] == 1500
    assert answer["usage"]["output_tokens"] == 41


async def test_the_stop_sequence_that_ended_the_answer_is_named(tmp_path: Path) -> None:
    """On the real tiny model, an answer ended by one of ``stop_sequences`` says
    ``stop_reason: "stop_sequence"`` and which one: whole, streamed, and again when the answer
    comes from the response cache."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TINY)
    body = {
        "model": "auto",
        "max_tokens": 12,
        "temperature": 0,
        "stop_sequences": [","],
        "messages": [{"role": "user", "content": COUNT}],
    }
    async with gateway(policy, ledger=False) as (client, app):
        whole = await client.post("/v1/messages", json=body, headers=HEADERS)
        await app.state.cache.flush()
        client_sdk = sdk(app)
        async with client_sdk.messages.stream(  # the same request: from the cache
            model="auto",
            max_tokens=12,
            stop_sequences=[","],
            messages=[{"role": "user", "content": COUNT}],
            extra_body={"temperature": 0},  # this SDK's types no longer offer it
        ) as stream:
            cached = await stream.get_final_message()
        async with client_sdk.messages.stream(  # another key: the model streams it
            model="auto",
            max_tokens=12,
            stop_sequences=[";", ","],
            messages=[{"role": "user", "content": COUNT}],
            extra_body={"temperature": 0},
        ) as stream:
            streamed = await stream.get_final_message()
            assert stream.response.headers["x-tiergate-cache"] != "hit"
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert whole.headers["x-tiergate-cache"] == "miss"
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", ",")
    assert "," not in answer["content"][0]["text"]
    for message in (cached, streamed):
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", ",")
        assert message.content[0].type == "text"
        assert message.content[0].text == answer["content"][0]["text"]


async def test_a_streams_usage_ends_as_the_whole_answers(tmp_path: Path) -> None:
    """A stream's ``message_start`` can only hold the gateway's count of the prompt; its
    ``message_delta`` carries the backend's (input and cache reads, cumulative), so the SDK's
    final message reports the same input as the same request answered whole."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TINY + "cache: {responses: {enabled: false}}\n")
    question: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "Say hello in German."}
    ]
    async with gateway(policy, ledger=False) as (_client, app):
        client_sdk = sdk(app)
        whole = await client_sdk.messages.create(model="auto", max_tokens=4, messages=question)
        async with client_sdk.messages.stream(
            model="auto", max_tokens=4, messages=question
        ) as stream:
            raw = [event async for event in stream]
            final = await stream.get_final_message()
    start = next(e for e in raw if e.type == "message_start")
    delta = next(e for e in raw if e.type == "message_delta")
    assert start.message.usage.input_tokens > 0
    assert delta.usage.input_tokens is not None
    assert delta.usage.cache_read_input_tokens is not None
    assert final.usage.cache_read_input_tokens  # the tiny model reused the prompt it had just read
    assert final.usage.output_tokens == whole.usage.output_tokens == 4

    def prompt(usage: anthropic.types.Usage) -> int:
        return usage.input_tokens + (usage.cache_read_input_tokens or 0)

    assert prompt(final.usage) == prompt(whole.usage)


@pytest.mark.parametrize(
    ("role", "hint"),
    [
        ("system", "top-level `system` field"),
        ("developer", "top-level `system` field"),
        ("tool", "`tool_result` block of a user turn"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_a_role_anthropic_does_not_take_says_where_it_goes(
    policy: Path, path: str, role: str, hint: str
) -> None:
    """A turn whose role Anthropic does not take is refused naming the roles it does take
    (user, assistant) and where that turn's content goes instead."""
    body = {
        "model": "auto",
        "max_tokens": 20,
        "messages": [{"role": role, "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post(path, json=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    message = error["message"]
    assert message.startswith(f"messages[0].role: unknown role {role!r}; use user, assistant (")
    assert hint in message
    assert "developer, user" not in message


async def test_a_backend_timeout_is_anthropics_timeout_error(policy: Path) -> None:
    """A backend that gives no answer in time is a 504 of type ``timeout_error``, as Anthropic
    names it now (before: ``api_error``); the SDK still raises its 5xx class for it."""
    late = FakeBackend.scripted("small", FakeStep(error="timeout"))
    question: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    async with gateway(policy, backends={"small": late}, ledger=False) as (_client, app):
        with pytest.raises(anthropic.InternalServerError) as timed_out:
            await sdk(app).messages.create(model="auto", max_tokens=8, messages=question)
    assert timed_out.value.status_code == 504
    body = timed_out.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "timeout_error"


@pytest.mark.parametrize("blank", ["", " \n"], ids=["empty", "whitespace"])
async def test_a_blank_text_block_is_refused_as_at_anthropic(policy: Path, blank: str) -> None:
    """A text block with nothing but whitespace is a 400 naming it, as Anthropic refuses it:
    ``[{"type": "text", "text": ""}]`` is an empty turn too (before, only ``""`` and ``[]``
    were refused, and the model was asked to answer nothing). An assistant turn's may be
    blank: the gateway's own answer carries ``{"type": "text", "text": ""}`` when the model
    said nothing, and a client sends it back as it came (and a prefill may be empty)."""
    small = FakeBackend.scripted("small", "answer")
    turns: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": [{"type": "text", "text": blank}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Say hi."},
    ]
    async with gateway(policy, backends={"small": small}, ledger=False) as (_client, app):
        client = sdk(app)
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model="auto", max_tokens=8, messages=turns)
        with pytest.raises(anthropic.BadRequestError) as counted:
            await client.messages.count_tokens(model="auto", messages=turns)
        silent: anthropic.types.MessageParam = {
            "role": "assistant",
            "content": [{"type": "text", "text": blank}],
        }
        echoed = [turns[2], silent, turns[2], silent]  # a silent answer sent back, a prefill
        answered = await client.messages.create(model="auto", max_tokens=8, messages=echoed)
    for error in (refused.value, counted.value):
        assert error.status_code == 400
        body = error.body
        assert isinstance(body, dict)
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(
            "messages[0].content[0].text: a text block must contain non-whitespace text"
        )
    assert answered.content[0].type == "text"
    assert len(small.requests) == 1  # the last one: the refused ones reached no backend

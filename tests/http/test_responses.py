"""``/v1/responses`` in-process, with scripted backends: the translation of input items, the
refusals (named, in OpenAI's shape), and the same request through chat and responses reaching
the same backend at the same cost, each recorded with its wire format."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from adapters.fake import FakeBackend
from tests.http.helpers import gateway
from tests.http.test_messages import HEADERS, POLICY, events, recorded_apis


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


async def test_items_become_the_chat_the_backend_sees(policy: Path) -> None:
    small = FakeBackend.scripted("small", "seen")
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "How far is Lyon from Paris?"}],
            },
        ],
        "max_output_tokens": 40,
    }
    async with gateway(policy, backends={"small": small}, ledger=False) as (client, _app):
        response = await client.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    sent = small.requests[-1]
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "Be brief."),
        ("system", "Use metric units."),
        ("user", "How far is Lyon from Paris?"),
    ]
    assert sent.max_tokens == 40
    answer = response.json()
    assert answer["object"] == "response"
    assert answer["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "seen",
        "annotations": [],
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        (
            {"model": "auto", "input": "hi", "previous_response_id": "resp_1"},
            "previous_response_id",
        ),
        ({"model": "auto", "input": "hi", "store": True}, "store"),
        ({"model": "auto", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
async def test_what_cannot_be_honoured_is_refused_by_name(
    policy: Path, body: dict[str, object], param: str
) -> None:
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert param in error["message"]


NARROW = """
version: 1
backends:
  small:
    type: fake
    capabilities: {json_mode: false, context_window: 64, max_output_tokens: 32}
tiers:
  - {name: only, backends: [small]}
"""


@pytest.mark.parametrize(
    ("body", "param", "also"),
    [
        ({"input": "word " * 200}, "input", "lower max_output_tokens"),
        ({"input": "hi", "max_output_tokens": 100}, "max_output_tokens", "max_output_tokens 100"),
        ({"input": "hi", "text": {"format": {"type": "json_object"}}}, "text.format", "json"),
    ],
)
async def test_a_request_no_backend_fits_is_told_in_responses_words(
    tmp_path: Path, body: dict[str, object], param: str, also: str
) -> None:
    """The refusal of a Responses request that no backend can serve names the field this client
    sent (``input``, ``max_output_tokens``, ``text.format``), in ``param`` and in the message,
    never the chat field the pipeline knows it by (``messages``, ``max_tokens``)."""
    policy = tmp_path / "narrow.yaml"
    policy.write_text(NARROW)
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post("/v1/responses", json={"model": "auto", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    assert also in error["message"]
    for chat_word in ("messages", "max_tokens", "response_format"):
        assert chat_word not in error["message"].replace("limits.max_tokens", "")


async def test_the_legacy_completions_refusal_names_the_prompt(tmp_path: Path) -> None:
    """The same refusal through ``/v1/completions`` names its ``prompt``, message included."""
    policy = tmp_path / "narrow.yaml"
    policy.write_text(NARROW)
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post(
            "/v1/completions", json={"model": "auto", "prompt": "word " * 200}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "prompt"
    assert error["message"].startswith("prompt: the prompt does not fit")


async def test_the_three_front_doors_reach_the_same_backend_at_the_same_cost(
    policy: Path,
) -> None:
    """The same prompt through chat, messages and responses: the very same request reaches
    the same backend, with the same prompt tokens and cost, and one ledger row each records
    the wire format it came through."""
    small = FakeBackend.scripted("small", "the same answer")
    prompt = "Summarise the plot of Hamlet in one line."
    turns = [{"role": "user", "content": prompt}]
    async with gateway(policy, backends={"small": small}) as (client, app):
        chat = await client.post(
            "/v1/chat/completions", json={"model": "auto", "max_tokens": 30, "messages": turns}
        )
        messages = await client.post(
            "/v1/messages",
            json={"model": "auto", "max_tokens": 30, "messages": turns},
            headers=HEADERS,
        )
        responses = await client.post(
            "/v1/responses", json={"model": "auto", "max_output_tokens": 30, "input": prompt}
        )
        await app.state.ledger.flush()
        apis = await asyncio.to_thread(recorded_apis, app.state.ledger.engine)
    assert chat.status_code == messages.status_code == responses.status_code == 200
    assert apis == {
        chat.headers["x-request-id"]: "chat",
        messages.headers["x-request-id"]: "messages",
        responses.headers["x-request-id"]: "responses",
    }
    for other in (messages, responses):
        for header in ("x-tiergate-backend", "x-tiergate-tier", "x-tiergate-complexity"):
            assert chat.headers[header] == other.headers[header]
        assert chat.headers["x-tiergate-cost-usd"] == other.headers["x-tiergate-cost-usd"]
    assert small.requests[0] == small.requests[1] == small.requests[2]
    usage = chat.json()["usage"]
    assert messages.json()["usage"]["input_tokens"] == usage["prompt_tokens"]
    assert messages.json()["usage"]["output_tokens"] == usage["completion_tokens"]
    assert responses.json()["usage"]["input_tokens"] == usage["prompt_tokens"]


async def test_a_tool_turn_is_pointed_at_function_call_output(policy: Path) -> None:
    """A chat-style ``tool`` turn is refused naming the roles an input message takes, and
    the item a function's result goes in."""
    body = {"model": "auto", "input": [{"role": "tool", "content": "42"}]}
    async with gateway(policy, ledger=False) as (client, _app):
        response = await client.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input[0].role"
    assert error["message"] == (
        "input[0].role: unknown role 'tool'; use user, assistant, system, developer (a "
        "function's result goes in a `function_call_output` item)"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_cut_by_max_output_tokens_is_incomplete_item_and_all(
    policy: Path, stream: bool
) -> None:
    """Cut by ``max_output_tokens``, the response is ``incomplete`` and so is its message
    item, whole and in ``response.output_item.done``; an answer that ended on its own is
    ``completed`` throughout, with its ``completed_at`` (Unix seconds, OpenAI's: only on a
    completed response; ``null`` while in progress and when cut short)."""
    small = FakeBackend.scripted("small", "one two three four five six")
    cut = {"model": "auto", "input": "Count.", "max_output_tokens": 3, "stream": stream}
    whole = {**cut, "max_output_tokens": 30}
    async with gateway(policy, backends={"small": small}, ledger=False) as (client, _app):
        answers = [await client.post("/v1/responses", json=body) for body in (cut, whole)]
    for response, status in zip(answers, ("incomplete", "completed"), strict=True):
        assert response.status_code == 200, response.text
        final: Any
        if stream:
            seen: list[tuple[str, Any]] = events(response.text)
            done = [data["item"] for name, data in seen if name == "response.output_item.done"]
            assert [item["status"] for item in done] == [status]
            final = seen[-1][1]["response"]
            shells = [data["response"] for _name, data in seen[:2]]
            assert [shell["completed_at"] for shell in shells] == [None, None]
        else:
            final = response.json()
        assert final["status"] == status
        assert [item["status"] for item in final["output"]] == [status]
        if status == "completed":
            assert isinstance(final["completed_at"], int)
            assert final["completed_at"] >= final["created_at"]
        else:
            assert final["completed_at"] is None
    assert final["incomplete_details"] is None


async def test_stream_options_as_recent_sdks_send_them(policy: Path) -> None:
    """The openai SDK's ``stream_options={"include_obfuscation": False}`` is accepted (and
    needs nothing done: no event is padded); a field Responses' ``stream_options`` does not
    have is still refused by name."""
    small = FakeBackend.scripted("small", "streamed words")
    async with gateway(policy, backends={"small": small}, ledger=False) as (client, app):
        sdk = openai.AsyncOpenAI(
            base_url="http://gw/v1",
            api_key="unused",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
            max_retries=0,
        )
        stream = await sdk.responses.create(
            model="auto",
            input="Say something.",
            stream=True,
            stream_options={"include_obfuscation": False},
        )
        kinds: list[str] = []
        text: list[str] = []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
                assert not getattr(event, "obfuscation", None)
        refused = await client.post(
            "/v1/responses",
            json={
                "model": "auto",
                "input": "hi",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert kinds[-1] == "response.completed"
    assert "".join(text) == "streamed words"
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "stream_options.include_usage"

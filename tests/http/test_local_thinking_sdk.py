"""A local reasoning model's thinking through the gateway, with the official ``anthropic`` and
``openai`` SDKs against the app behind a real uvicorn; Ollama is mocked at the HTTP layer with
respx, its bodies shaped as its API documentation shows them
(https://github.com/ollama/ollama/blob/main/docs/api.md#chat-request-with-thinking).

Ollama's ``message.thinking`` reaches Messages clients as ``thinking`` blocks with an empty
signature (``thinking_delta`` streamed, no ``signature_delta``) when they asked for thinking,
and chat clients as ``reasoning_content``; the block sent back on the next turn is accepted and
not forwarded; the ledger counts Ollama's ``eval_count`` (the reasoning's tokens included)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import respx
from anthropic.types import MessageParam, ThinkingConfigEnabledParam, ToolParam
from fastapi import FastAPI
from sqlalchemy import select

from gateway.ledger.models import RequestRow
from tests.adapters.ollama import _upstream
from tests.http.helpers import gateway, served, until

OLLAMA = "http://ollama-local-think.test:11434"
MODEL = "qwen3:8b"
POLICY = f"""
version: 1
backends:
  local: {{type: ollama, model: "{MODEL}", base_url: "{OLLAMA}"}}
tiers:
  - {{name: local, backends: [local]}}
routes:
  auto: {{}}
"""
THINK: ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": 1024}
THOUGHT_PIECES = ("Okay, 27 * 453:", " 27 * 400 = 10800,", " 27 * 53 = 1431.")
REASONING = "".join(THOUGHT_PIECES)
ANSWER_PIECES = ("27 * 453", " = 12231.")
ANSWER = "".join(ANSWER_PIECES)
EVAL_COUNT = 88  # every generated token: the reasoning's and the answer's
PROMPT_COUNT = 17
QUESTION: list[MessageParam] = [{"role": "user", "content": "What is 27 * 453?"}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def _counts() -> dict[str, Any]:
    return {
        "done_reason": "stop",
        "done": True,
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": PROMPT_COUNT,
        "prompt_eval_duration": 342546000,
        "eval_count": EVAL_COUNT,
        "eval_duration": 4535599000,
    }


def _line(content: str = "", thinking: str | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, **extra}
    if thinking is not None:
        message["thinking"] = thinking
    return {"model": MODEL, "created_at": "2025-05-29T09:35:56.836Z", "message": message}


def chat(request: httpx.Request) -> httpx.Response:
    """``POST /api/chat``: the load (no messages); a tool call when tools were offered and no
    tool answered yet; otherwise the reasoning, then the answer, whole or as NDJSON."""
    body = json.loads(request.content)
    if not body.get("messages"):
        return _upstream.chat(request)
    if body.get("tools") and body["messages"][-1]["role"] != "tool":
        call = {"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}
        whole = _line("", "I need the weather in Paris.", tool_calls=[call])
        return httpx.Response(200, json={**whole, **_counts()})
    if body.get("stream") is False:
        return httpx.Response(200, json={**_line(ANSWER, REASONING), **_counts()})
    lines = [
        *({**_line("", piece), "done": False} for piece in THOUGHT_PIECES),
        *({**_line(piece), "done": False} for piece in ANSWER_PIECES),
        {**_line(""), **_counts()},
    ]
    ndjson = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.Response(
        200, content=ndjson.encode(), headers={"content-type": "application/x-ndjson"}
    )


@asynccontextmanager
async def local_model(tmp_path: Path) -> AsyncIterator[tuple[str, respx.Route, FastAPI]]:
    """The app behind uvicorn, its one backend a (mocked) Ollama model that can think."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        upstream = router.post(f"{OLLAMA}/api/chat").mock(side_effect=chat)
        shown = _upstream.show(["completion", "tools", "thinking"])
        router.post(f"{OLLAMA}/api/show").mock(return_value=httpx.Response(200, json=shown))
        router.get(f"{OLLAMA}/api/tags").mock(
            return_value=httpx.Response(200, json=_upstream.tags(MODEL))
        )
        async with gateway(policy) as (_client, app), served(app) as url:
            yield url, upstream, app


def chats(upstream: respx.Route) -> list[dict[str, Any]]:
    """The bodies of the chats Ollama was sent, in order (the startup load left out)."""
    bodies = [json.loads(call.request.content) for call in upstream.calls]
    return [body for body in bodies if body.get("messages")]


def ledger_rows(app: FastAPI) -> list[Any]:
    with app.state.ledger.engine.connect() as connection:
        return list(connection.execute(select(*RequestRow.__table__.columns)).all())


async def test_messages_clients_get_unsigned_thinking_blocks_whole_and_streamed(
    tmp_path: Path,
) -> None:
    """Asked to think, the local model's reasoning comes first as a ``thinking`` block whose
    ``signature`` is an empty string, then the text: whole, and streamed as ``thinking_delta``
    events with no ``signature_delta``. Not asked, the same model's reasoning stays out, as
    Anthropic's API answers without thinking. ``output_tokens`` and the ledger are Ollama's
    ``eval_count``."""
    async with local_model(tmp_path) as (url, upstream, app):
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
        async with sdk:
            whole = await sdk.messages.create(
                model="auto", max_tokens=4096, thinking=THINK, messages=QUESTION
            )
            async with sdk.messages.stream(
                model="auto", max_tokens=4096, thinking=THINK, messages=QUESTION
            ) as stream:
                events = [event async for event in stream]
                streamed = await stream.get_final_message()
            unasked = await sdk.messages.create(model="auto", max_tokens=4096, messages=QUESTION)
            async with sdk.messages.stream(
                model="auto", max_tokens=4096, messages=QUESTION
            ) as stream:
                unasked_streamed = await stream.get_final_message()
        await until(lambda: len(ledger_rows(app)) == 4, "the four ledger rows")
        rows = ledger_rows(app)
    assert [body.get("think") for body in chats(upstream)] == [True, True, None, None]
    for message in (whole, streamed):
        assert [block.model_dump() for block in message.content] == [
            {"type": "thinking", "thinking": REASONING, "signature": ""},
            {"type": "text", "text": ANSWER, "citations": None},
        ]
        assert (message.usage.input_tokens, message.usage.output_tokens) == (
            PROMPT_COUNT,
            EVAL_COUNT,
        )
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas == ["thinking_delta"] * len(THOUGHT_PIECES) + ["text_delta"] * len(ANSWER_PIECES)
    for message in (unasked, unasked_streamed):
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].type == "text"
        assert message.content[0].text == ANSWER
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (PROMPT_COUNT, EVAL_COUNT)
    ] * 4


async def test_a_tool_turn_sent_back_with_its_unsigned_block_is_accepted_not_forwarded(
    tmp_path: Path,
) -> None:
    """A tool-use conversation as Anthropic's docs build it (the answer's content sent back
    as it came, unsigned thinking block first, then the tool's result) is answered; the block,
    which no backend could verify, does not reach Ollama."""
    async with local_model(tmp_path) as (url, upstream, _app):
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
        async with sdk:
            first = await sdk.messages.create(
                model="auto", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=QUESTION
            )
            call = next(block for block in first.content if block.type == "tool_use")
            turns: list[MessageParam] = [
                *QUESTION,
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "19°C"}],
                },
            ]
            second = await sdk.messages.create(
                model="auto", max_tokens=4096, thinking=THINK, tools=[WEATHER], messages=turns
            )
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    first_block = first.content[0]
    assert first_block.type == "thinking"
    assert first_block.signature == ""
    followed = chats(upstream)[1]
    assistant = followed["messages"][1]
    assert assistant["role"] == "assistant"
    assert "thinking" not in assistant
    assert "I need the weather" not in json.dumps(followed)
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert [block.type for block in second.content] == ["thinking", "text"]
    assert second.content[1].type == "text"
    assert second.content[1].text == ANSWER


async def test_chat_clients_get_reasoning_content_whole_and_streamed(tmp_path: Path) -> None:
    """Through ``/v1/chat/completions`` the local model's reasoning comes as the message's
    ``reasoning_content`` and, streamed, as ``delta.reasoning_content`` pieces before the
    content; ``completion_tokens`` is Ollama's ``eval_count``."""
    async with (
        local_model(tmp_path) as (url, _upstream_route, _app),
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused") as client,
    ):
        whole = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "What is 27 * 453?"}]
        )
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "What is 27 * 453?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    message = whole.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == REASONING
    assert message.content == ANSWER
    assert whole.usage is not None
    assert whole.usage.completion_tokens == EVAL_COUNT
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    pieces = [(d.model_extra or {}).get("reasoning_content") for d in deltas]
    assert [p for p in pieces if p] == list(THOUGHT_PIECES)
    assert "".join(d.content or "" for d in deltas) == ANSWER
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    assert max(i for i, p in enumerate(pieces) if p) < first_text
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == EVAL_COUNT

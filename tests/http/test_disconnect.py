"""A client that goes away before its answer: the work on it stops, whatever the endpoint, and
the ledger says what happened. Over a real uvicorn with the real tiny model, plus the
disconnect watcher itself (``gateway.http.disconnect``) against a scripted ASGI ``receive``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select
from starlette.types import Message, Receive

from adapters.tiny.backend import TinyBackend
from gateway.http.disconnect import ClientGone, unless_gone
from gateway.ledger.models import RequestRow
from gateway.scoring.tokens import count_exact
from tests.http.helpers import gateway, served, until

# One worker, and no room to queue: a request that finds the model still busy with an
# abandoned one is refused as busy (and retried), so a first-try answer means the model was free.
POLICY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048, max_queue: 0}
tiers:
  - {name: only, backends: [tiny]}
"""
# The same, its tokens priced, so a row's cost shows how its tokens were priced.
IN_PER_1M, OUT_PER_1M = 3.0, 15.0
PRICED = (
    POLICY
    + f"""
pricing:
  backends:
    tiny: {{usd_per_1m_input: {IN_PER_1M}, usd_per_1m_output: {OUT_PER_1M}}}
"""
)
GENERATED = 90  # tokens in the model's context before the client hangs up
ESSAY = "Write a very long essay about mountains, their history and their people."
LONG = 1500  # ~25 s of generation on this model if nobody stops it
USER = [{"role": "user", "content": ESSAY}]
# Each non-streamed endpoint with a request for LONG tokens.
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "max_tokens": LONG, "messages": USER}),
    "completions": ("/v1/completions", {"model": "auto", "max_tokens": LONG, "prompt": ESSAY}),
    "messages": ("/v1/messages", {"model": "auto", "max_tokens": LONG, "messages": USER}),
    "responses": ("/v1/responses", {"model": "auto", "max_output_tokens": LONG, "input": ESSAY}),
}
SHORT = {"model": "auto", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}

pytestmark = pytest.mark.model


def rows(app: FastAPI) -> list[Any]:
    ledger = app.state.ledger
    with ledger.engine.connect() as connection:
        return list(connection.execute(select(*RequestRow.__table__.columns)).all())


async def row_of(app: FastAPI, what: str, **fields: object) -> Any:
    """The first ledger row with these field values, once it is written."""
    found: list[Any] = []

    def written() -> bool:
        found[:] = [r for r in rows(app) if all(getattr(r, k) == v for k, v in fields.items())]
        return bool(found)

    await until(written, what)
    return found[0]


@contextlib.contextmanager
def asyncio_reports() -> Iterator[list[dict[str, Any]]]:
    """What the running loop's exception handler is given meanwhile ("Future exception was
    never retrieved", "Task exception was never retrieved"...), collected."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        gc.collect()  # a dropped future reports its unread exception when it is collected
        loop.set_exception_handler(previous)


@contextlib.asynccontextmanager
async def tiny_gateway(
    tmp_path: Path, text: str = POLICY
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    async with (
        gateway(policy) as (_, app),
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        yield app, client


def in_context(app: FastAPI) -> int:
    """How many tokens the tiny model's llama.cpp context holds now: while it generates, the
    prompt and every generated token but the one just sampled."""
    backend = app.state.runtime.active.pool["tiny"].backend
    assert isinstance(backend, TinyBackend)
    llm = backend._llm
    return 0 if llm is None else int(llm.n_tokens)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_an_abandoned_request_stops_its_generation_and_is_recorded_as_499(
    tmp_path: Path, endpoint: str
) -> None:
    """A client that hangs up on a non-streamed request for 1,500 tokens once the model has
    generated a few dozen: the generation stops (the row comes long before the tokens could
    have), the row says 499 with the tokens the model read and generated before the stop,
    exactly (what the context holds; not flagged as an estimate), priced as any row is, and
    the model is free for the next request at once (first try, no queue)."""
    path, body = ENDPOINTS[endpoint]
    with asyncio_reports() as reported:
        async with tiny_gateway(tmp_path, PRICED) as (app, client):
            tiny = app.state.runtime.active.pool["tiny"]
            asked = asyncio.create_task(client.post(path, json=body))
            await until(lambda: tiny.in_flight == 1, "the request to reach the model")
            # The prompts here are well under GENERATED tokens: past it, the model generates.
            await until(lambda: in_context(app) >= GENERATED, "the model to generate", 60)
            asked.cancel()  # hang up: the connection closes
            with contextlib.suppress(asyncio.CancelledError):
                await asked
            row = await row_of(app, "the abandoned request's row", status=499)
            assert (row.stream, row.backend, row.api) == (False, "tiny", endpoint)
            assert 0 < row.prompt_tokens < GENERATED
            assert GENERATED - row.prompt_tokens <= row.completion_tokens < LONG
            # The context holds the prompt and each generated token but the last one sampled.
            assert row.prompt_tokens + row.completion_tokens - 1 == in_context(app)
            assert row.usage_estimated is False  # the model counted them
            price = row.prompt_tokens * IN_PER_1M + row.completion_tokens * OUT_PER_1M
            assert float(row.cost_usd) == pytest.approx(price / 1_000_000)
            assert (row.attempts, row.cost_source) == (1, "policy")
            assert tiny.in_flight == 0  # the model let go of it before the row was written

            response = await client.post("/v1/chat/completions", json=SHORT)
            assert response.status_code == 200, response.text
            rid = response.headers["x-request-id"]
            following = await row_of(app, "the next request's row", id=rid)
            assert (following.status, following.attempts) == (200, 1)  # not busy: no retry
    assert reported == []


async def test_a_stream_hung_up_on_leaves_nothing_for_asyncio_to_report(tmp_path: Path) -> None:
    """A stream cut short stops the model between tokens; the worker's "generation stopped"
    is read, not left on a future for asyncio to print as a traceback (logs are JSON lines).
    Its row counts the text the model had sent (at least what reached the client), flagged
    as an estimate."""
    stream = {**ENDPOINTS["chat"][1], "stream": True}
    with asyncio_reports() as reported:
        async with tiny_gateway(tmp_path) as (app, client):
            text = ""
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        text += json.loads(line[len("data: ") :])["choices"][0]["delta"]["content"]
                    if count_exact(text) >= 20:
                        break  # some text: hang up
            row = await row_of(app, "the abandoned stream's row", status=499)
            assert (row.stream, row.backend) == (True, "tiny")
            # At least what the client read (a word it saw cut may count one token more than
            # the whole word the gateway had by then).
            assert count_exact(text) - 1 <= row.completion_tokens < LONG
            assert row.usage_estimated is True
            # Served after the abandoned generation ended: the model answers one at a time.
            response = await client.post("/v1/chat/completions", json=SHORT)
            assert response.status_code == 200, response.text
    assert reported == []


# An OpenAI-compatible upstream (mocked at the HTTP layer) whose chunks carry many tokens each:
# a stream cut short is billed for the tokens of its text, not one per chunk.
UPSTREAM = "http://upstream.invalid/v1"
COMPAT = f"""
version: 1
backends:
  local: {{type: openai_compat, model: gpt-4o-mini, base_url: "{UPSTREAM}", http_client: httpx}}
tiers:
  - {{name: only, backends: [local]}}
"""
# Bodies as OpenAI's API reference shows them (models list, chat.completion.chunk).
MODELS = {
    "object": "list",
    "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1686935002, "owned_by": "openai"}],
}
SENTENCES = [
    "Mountains rise where tectonic plates collide, folding rock over millions of years. ",
    "Their peaks shape the weather: moist air climbs, cools and falls as rain or snow. ",
    "People have farmed their valleys, crossed their passes and told stories of them. ",
]


def chunk(delta: dict[str, str]) -> bytes:
    body = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Stalled(httpx.AsyncByteStream):
    """An SSE body that sends its events, then holds the connection open, sending nothing."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event
        await self.closed.wait()

    async def aclose(self) -> None:
        self.closed.set()


async def test_a_stream_cut_short_is_billed_for_the_tokens_of_its_text(tmp_path: Path) -> None:
    """An upstream sends three chunks of a sentence each, then nothing more: the client reads
    them and hangs up. The row counts the sentences' tokens with the gateway's tokenizer
    (dozens), not one per chunk, prices them as the policy says, and flags the estimate."""
    priced = COMPAT + "pricing: {backends: {local: {usd_per_1m_input: 1, usd_per_1m_output: 4}}}\n"
    body = Stalled(
        [chunk({"role": "assistant", "content": ""})] + [chunk({"content": c}) for c in SENTENCES]
    )
    with respx.mock(assert_all_mocked=True) as router:
        router.route(host="127.0.0.1").pass_through()  # the client, to the gateway
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        router.post(f"{UPSTREAM}/chat/completions").respond(
            200, headers={"content-type": "text/event-stream"}, stream=body
        )
        async with tiny_gateway(tmp_path, priced) as (app, client):
            request = {"model": "auto", "stream": True, "messages": USER}
            text = ""
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                assert response.status_code == 200, await response.aread()
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        text += json.loads(line[len("data: ") :])["choices"][0]["delta"]["content"]
                    if text == "".join(SENTENCES):
                        break  # all of it: hang up
            row = await row_of(app, "the abandoned stream's row", status=499)
            await until(body.closed.is_set, "the upstream connection to close")
    assert (row.stream, row.backend) == (True, "local")
    assert row.completion_tokens == count_exact("".join(SENTENCES)) > 3 * len(SENTENCES)
    assert row.usage_estimated is True
    assert row.prompt_tokens > 0  # the gateway's count of the prompt
    price = row.prompt_tokens * 1 + row.completion_tokens * 4
    assert float(row.cost_usd) == pytest.approx(price / 1_000_000)


async def test_an_abandoned_request_for_two_choices_counts_both_calls_exactly(
    tmp_path: Path,
) -> None:
    """``n: 2`` on the real tiny model: the first choice is answered, the client hangs up while
    the model generates the second. The 499 row counts both calls as the model counted them:
    the prompt twice, the first choice's tokens and the second's up to the stop (what the
    context holds), not flagged as an estimate; the model is free at once."""
    most = 120
    async with tiny_gateway(tmp_path, PRICED) as (app, client):
        tiny = app.state.runtime.active.pool["tiny"]
        backend = tiny.backend
        calls: list[object] = []
        answers: list[Any] = []
        complete = backend.acomplete

        async def counted(request: Any) -> Any:  # the real model; its calls and answers seen
            calls.append(request)
            answers.append(await complete(request))
            return answers[-1]

        backend.acomplete = counted
        body = {"model": "auto", "max_tokens": most, "messages": USER, "n": 2}
        asked = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await until(lambda: len(calls) == 2, "the second choice's call", 60)
        (first,) = answers
        prompt, generated = first.usage.prompt_tokens, first.usage.completion_tokens
        # The context after the first choice: its prompt and tokens (the last one sampled is
        # not decoded when max_tokens ended it).
        stale = {prompt + generated - 1, prompt + generated}
        await until(
            lambda: in_context(app) not in stale and in_context(app) >= prompt + 9,
            "the second choice to generate ten tokens",
            60,
        )
        asked.cancel()  # hang up
        with contextlib.suppress(asyncio.CancelledError):
            await asked
        row = await row_of(app, "the abandoned request's row", status=499)
        second = in_context(app) - prompt + 1  # the context holds all but the last sampled
        assert tiny.in_flight == 0
    assert 10 <= second < most
    assert row.prompt_tokens == 2 * prompt
    assert row.completion_tokens == generated + second
    assert row.usage_estimated is False  # the model counted every token
    price = row.prompt_tokens * IN_PER_1M + row.completion_tokens * OUT_PER_1M
    assert float(row.cost_usd) == pytest.approx(price / 1_000_000)


# --- the watcher against a scripted receive ---------------------------------------------------


def scripted(*messages: Message) -> tuple[Receive, asyncio.Event]:
    """A ``receive`` that hands out ``messages``, then waits for ``hang_up`` and says
    ``http.disconnect``, as a server does once the body is in."""
    queue = list(messages)
    hang_up = asyncio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await hang_up.wait()
        return {"type": "http.disconnect"}

    return receive, hang_up


async def test_the_work_s_answer_is_returned_while_the_client_stays() -> None:
    receive, _ = scripted()

    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await unless_gone(receive, work()) == "answer"


async def test_a_disconnect_cancels_the_work_and_says_the_client_is_gone() -> None:
    """The work is cancelled where it waits (its clean-up runs), and the caller is told
    ``ClientGone``; the task is not left cancelling."""
    receive, hang_up = scripted()
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends it
        finally:
            cleaned.set()
        return "never"

    async def request() -> None:
        with pytest.raises(ClientGone):
            await unless_gone(receive, work())
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    handled = asyncio.create_task(request())
    await started.wait()
    hang_up.set()
    await handled
    assert cleaned.is_set()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """The server stopping (its own cancellation) is not mistaken for the client leaving."""
    receive, _ = scripted()
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    handled = asyncio.create_task(unless_gone(receive, work()))
    await started.wait()
    handled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handled


async def test_the_work_s_own_error_passes_through() -> None:
    """A refusal (or any error) of the work reaches the endpoint as it was raised."""
    receive, _ = scripted()

    async def work() -> None:
        await asyncio.sleep(0)
        raise LookupError("refused")

    with pytest.raises(LookupError, match="refused"):
        await unless_gone(receive, work())


# --- n > 1: every choice's call is accounted for ----------------------------------------------

# OpenAI's API reference: a chat completion, its usage as the upstream reports it.
ANSWER = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": SENTENCES[0], "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 19, "completion_tokens": 17, "total_tokens": 36},
}
PRICED_COMPAT = (
    COMPAT + "pricing: {backends: {local: {usd_per_1m_input: 1, usd_per_1m_output: 4}}}\n"
)


async def test_an_abandoned_request_for_several_choices_counts_every_call(
    tmp_path: Path,
) -> None:
    """``n: 3``: the first choice's call answers (its usage reported), the two extra calls hang;
    the client hangs up. The 499 row counts all three calls: the first's tokens as reported,
    and the prompt of each call cut short, estimated as a call cut short on its own is (a
    request for one choice whose call hangs, hung up on the same way), flagged; priced."""
    calls: list[httpx.Request] = []
    hanging: list[Stalled] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(200, json=ANSWER)
        hanging.append(Stalled([]))  # headers sent, the body never comes
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=hanging[-1])

    with respx.mock(assert_all_mocked=True) as router:
        router.route(host="127.0.0.1").pass_through()  # the client, to the gateway
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        router.post(f"{UPSTREAM}/chat/completions").mock(side_effect=upstream)
        async with tiny_gateway(tmp_path, PRICED_COMPAT) as (app, client):
            request = {"model": "auto", "messages": USER, "max_tokens": 50}

            async def hang_up(n: int, calls_by_then: int, rows_by_then: int) -> None:
                asked = asyncio.create_task(
                    client.post("/v1/chat/completions", json={**request, "n": n})
                )
                await until(lambda: len(calls) == calls_by_then, f"{calls_by_then} calls")
                asked.cancel()  # hang up: the connection closes
                with contextlib.suppress(asyncio.CancelledError):
                    await asked
                await until(lambda: len(rows(app)) == rows_by_then, f"the row of n={n}")
                await until(lambda: all(h.closed.is_set() for h in hanging), "the calls to stop")

            await hang_up(3, 3, 1)
            await hang_up(1, 4, 2)
            three, one = sorted(rows(app), key=lambda r: r.ts)
    assert (three.status, three.backend, three.stream) == (499, "local", False)
    assert one.status == 499
    assert one.completion_tokens == 0
    assert one.prompt_tokens > 0  # the gateway's count of the prompt, for a call cut short
    assert three.prompt_tokens == 19 + 2 * one.prompt_tokens
    assert three.completion_tokens == 17  # only the first call answered
    assert three.usage_estimated is True
    price = three.prompt_tokens * 1 + three.completion_tokens * 4
    assert float(three.cost_usd) == pytest.approx(price / 1_000_000)


async def test_an_abandoned_stream_of_several_choices_counts_every_choice_s_text(
    tmp_path: Path,
) -> None:
    """``n: 2`` streamed: each choice's call sends sentences of its own, then nothing. The
    client reads both and hangs up: the 499 row counts the text of both choices (the
    gateway's tokenizer) and the prompt twice, flagged as estimated; both calls are closed."""
    bodies = [
        Stalled(
            [chunk({"role": "assistant", "content": ""}), *(chunk({"content": s}) for s in texts)]
        )
        for texts in (SENTENCES[:2], SENTENCES[2:])
    ]
    wanted = ["".join(SENTENCES[:2]), "".join(SENTENCES[2:])]
    with respx.mock(assert_all_mocked=True) as router:
        router.route(host="127.0.0.1").pass_through()
        router.get(f"{UPSTREAM}/models").respond(200, json=MODELS)
        router.post(f"{UPSTREAM}/chat/completions").mock(
            side_effect=[
                httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=b)
                for b in bodies
            ]
        )
        async with tiny_gateway(tmp_path, PRICED_COMPAT) as (app, client):
            request = {"model": "auto", "stream": True, "n": 2, "messages": USER}
            texts = ["", ""]
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                assert response.status_code == 200, await response.aread()
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        (choice,) = json.loads(line[len("data: ") :])["choices"]
                        texts[choice["index"]] += choice["delta"].get("content") or ""
                    if texts == wanted:
                        break  # every choice's text: hang up
            row = await row_of(app, "the abandoned stream's row", status=499)
            await until(lambda: all(b.closed.is_set() for b in bodies), "both calls to close")
    assert (row.stream, row.backend) == (True, "local")
    assert row.completion_tokens == count_exact(wanted[0]) + count_exact(wanted[1])
    assert row.usage_estimated is True
    assert row.prompt_tokens > 0
    assert row.prompt_tokens % 2 == 0  # the prompt, once per call
    price = row.prompt_tokens * 1 + row.completion_tokens * 4
    assert float(row.cost_usd) == pytest.approx(price / 1_000_000)

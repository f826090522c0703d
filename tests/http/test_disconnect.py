"""A client that goes away before its answer: the work on it stops, whatever the endpoint, and
the ledger says what happened. Over a real uvicorn with the real tiny model, plus the
disconnect watcher itself (``gateway.http.disconnect``) against a scripted ASGI ``receive``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.types import Message, Receive

from gateway.http.disconnect import ClientGone, unless_gone
from gateway.ledger.models import RequestRow
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
async def tiny_gateway(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with (
        gateway(policy) as (_, app),
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        yield app, client


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_an_abandoned_request_stops_its_generation_and_is_recorded_as_499(
    tmp_path: Path, endpoint: str
) -> None:
    """A client that hangs up on a non-streamed request for 1,500 tokens while the model works
    on it: the generation stops (the row comes long before the tokens could have), the row
    says 499 with no completion tokens (none reached the gateway; the usage is an estimate,
    flagged), and the model is free for the next request at once (first try, no queue)."""
    path, body = ENDPOINTS[endpoint]
    with asyncio_reports() as reported:
        async with tiny_gateway(tmp_path) as (app, client):
            tiny = app.state.runtime.active.pool["tiny"]
            asked = asyncio.create_task(client.post(path, json=body))
            await until(lambda: tiny.in_flight == 1, "the request to reach the model")
            asked.cancel()  # hang up: the connection closes
            with contextlib.suppress(asyncio.CancelledError):
                await asked
            row = await row_of(app, "the abandoned request's row", status=499)
            assert (row.stream, row.backend, row.api) == (False, "tiny", endpoint)
            assert row.completion_tokens == 0 < LONG
            assert row.usage_estimated is True
            assert row.prompt_tokens > 0  # the gateway's own count of the prompt
            assert row.attempts == 1
            assert tiny.in_flight == 0  # the model let go of it before the row was written

            response = await client.post("/v1/chat/completions", json=SHORT)
            assert response.status_code == 200, response.text
            rid = response.headers["x-request-id"]
            following = await row_of(app, "the next request's row", id=rid)
            assert (following.status, following.attempts) == (200, 1)  # not busy: no retry
    assert reported == []


async def test_a_stream_hung_up_on_leaves_nothing_for_asyncio_to_report(tmp_path: Path) -> None:
    """A stream cut short stops the model between tokens; the worker's "generation stopped"
    is read, not left on a future for asyncio to print as a traceback (logs are JSON lines)."""
    stream = {**ENDPOINTS["chat"][1], "stream": True}
    with asyncio_reports() as reported:
        async with tiny_gateway(tmp_path) as (app, client):
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        break  # the first text: hang up
            row = await row_of(app, "the abandoned stream's row", status=499)
            assert (row.stream, row.backend) == (True, "tiny")
            assert row.completion_tokens < LONG
            # Served after the abandoned generation ended: the model answers one at a time.
            response = await client.post("/v1/chat/completions", json=SHORT)
            assert response.status_code == 200, response.text
    assert reported == []


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

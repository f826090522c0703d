"""``Stopping`` and the ``Drain``: a request the drain stops is answered in its API's words, not
cut: a stream under way ends with its last event and still runs its clean-up; a request with
nothing sent yet gets a 503 (``retry-after``, its receipt's request id) in its API's shape; a
request that ended first, or one uvicorn itself cancels, is left alone. (The whole path, SIGTERM
to a real server, is tests/deploy/test_drain.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.drain import Drain, stop_after
from gateway.http.sse import EventStreamResponse
from gateway.http.stopping import Stopping, stop_of
from gateway.pipeline import Receipt

LAST = b"data: stopped\n\n"


class Wire:
    """The ASGI side: a client that never leaves, and every message sent to it."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.closed = 0
        self._never = asyncio.Event()

    async def receive(self) -> Message:
        await self._never.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def on_close(self) -> None:
        self.closed += 1

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    def headers(self) -> dict[str, str]:
        start = self.sent[0]
        assert start["type"] == "http.response.start", self.sent
        return {k.decode(): v.decode() for k, v in start["headers"]}

    def call(
        self, app: ASGIApp, drain: Drain, path: str = "/v1/chat/completions"
    ) -> asyncio.Task[None]:
        scope: Scope = {"type": "http", "path": path, "headers": []}
        return asyncio.create_task(Stopping(app, drain)(scope, self.receive, self.send))


def streaming(events: AsyncGenerator[bytes, None], wire: Wire) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = EventStreamResponse(
            events, headers={}, on_close=wire.on_close, on_stop=lambda: LAST
        )
        await response(scope, receive, send)

    return app


def whole(asked: asyncio.Event) -> ASGIApp:
    """A whole answer whose backend never answers (``asked`` set once it waits on it); cut, it
    leaves its receipt as the pipeline does (``Flight.abandoned``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        halt = stop_of(scope).halt
        asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if halt.stopping:
                halt.receipt = Receipt(request_id="rid-1", policy="p-1")
            raise

    return app


async def test_a_stream_the_drain_stops_ends_with_the_last_event() -> None:
    wire, drain = Wire(), Drain()
    first_sent = asyncio.Event()

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"data: one\n\n"
        first_sent.set()
        await asyncio.Event().wait()  # a backend that has nothing more yet
        yield b"data: never\n\n"

    task = wire.call(streaming(events(), wire), drain)
    await first_sent.wait()
    drain.stop()
    await task  # ends, not cancelled
    assert wire.body() == b"data: one\n\n" + LAST
    assert wire.sent[-1]["more_body"] is False
    assert wire.closed == 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/v1/chat/completions", "service_unavailable"), ("/v1/messages", "overloaded_error")],
)
async def test_a_request_with_nothing_sent_gets_a_503_in_its_apis_shape(
    path: str, kind: str
) -> None:
    wire, drain, asked = Wire(), Drain(), asyncio.Event()
    task = wire.call(whole(asked), drain, path)
    await asked.wait()  # the request is under way, waiting on its backend
    drain.stop()
    await task
    assert wire.sent[0]["status"] == 503
    headers = wire.headers()
    assert headers["retry-after"] == "1"
    assert headers["x-request-id"] == "rid-1"
    assert headers["x-tiergate-policy"] == "p-1"
    error = json.loads(wire.body())["error"]
    assert error["type"] == kind
    assert "shutting down" in error["message"]
    assert "retry" in error["message"]
    if kind == "service_unavailable":
        assert error["code"] == "server_shutting_down"


async def test_a_stream_stopped_before_its_first_event_still_gets_its_headers() -> None:
    wire, drain = Wire(), Drain()
    drain.stop()

    async def events() -> AsyncGenerator[bytes, None]:
        await asyncio.Event().wait()
        yield b"data: never\n\n"

    await wire.call(streaming(events(), wire), drain)
    assert wire.sent[0]["status"] == 200
    assert wire.body() == LAST
    assert wire.closed == 1


async def test_a_request_stopped_before_the_pipeline_had_it_still_gets_a_request_id() -> None:
    wire, drain = Wire(), Drain()
    drain.stop()  # it arrives after the stop

    async def reading_its_body(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()

    await wire.call(reading_its_body, drain)
    assert wire.sent[0]["status"] == 503
    assert wire.headers()["retry-after"] == "1"
    assert wire.headers()["x-request-id"]


async def test_a_stream_that_ended_first_is_left_alone() -> None:
    wire, drain = Wire(), Drain()

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"data: [DONE]\n\n"

    await wire.call(streaming(events(), wire), drain)
    drain.stop()
    assert wire.body() == b"data: [DONE]\n\n"
    assert wire.closed == 1


async def test_uvicorns_own_cancellation_is_not_answered() -> None:
    """Past the drain uvicorn cancels what is left: nothing is sent, the cancellation stands."""
    wire, drain, asked = Wire(), Drain(), asyncio.Event()
    task = wire.call(whole(asked), drain)
    await asked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wire.sent == []


def test_the_stop_comes_before_uvicorns_cut() -> None:
    """Two seconds before the drain's end; half way through a drain shorter than four."""
    assert stop_after(60) == 58
    assert stop_after(4) == 2
    assert stop_after(1) == 0.5

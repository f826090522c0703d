"""``EventStreamResponse`` and the ``Drain``: a stream the drain stops ends with its API's last
event and still runs its clean-up; a stream that ended first is left alone. (The whole path,
SIGTERM to a real server, is tests/deploy/test_drain.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.types import Message

from gateway.http.drain import Drain, stop_after
from gateway.http.sse import EventStreamResponse

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


def response(events: AsyncGenerator[bytes, None], wire: Wire, drain: Drain) -> EventStreamResponse:
    return EventStreamResponse(
        events, headers={}, on_close=wire.on_close, drain=drain, on_stop=lambda: LAST
    )


async def test_a_stream_the_drain_stops_ends_with_the_last_event() -> None:
    wire, drain = Wire(), Drain()
    first_sent = asyncio.Event()

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"data: one\n\n"
        first_sent.set()
        await asyncio.Event().wait()  # a backend that has nothing more yet
        yield b"data: never\n\n"

    task = asyncio.create_task(response(events(), wire, drain)({}, wire.receive, wire.send))
    await first_sent.wait()
    drain.stop()
    await task  # ends, not cancelled
    assert wire.body() == b"data: one\n\n" + LAST
    assert wire.sent[-1]["more_body"] is False
    assert wire.closed == 1


async def test_a_stream_stopped_before_its_first_byte_still_gets_its_headers() -> None:
    wire, drain = Wire(), Drain()
    drain.stop()

    async def events() -> AsyncGenerator[bytes, None]:
        await asyncio.Event().wait()
        yield b"data: never\n\n"

    await response(events(), wire, drain)({}, wire.receive, wire.send)
    assert wire.sent[0]["type"] == "http.response.start"
    assert wire.sent[0]["status"] == 200
    assert wire.body() == LAST
    assert wire.closed == 1


async def test_a_stream_that_ended_first_is_left_alone() -> None:
    wire, drain = Wire(), Drain()

    async def events() -> AsyncGenerator[bytes, None]:
        yield b"data: [DONE]\n\n"

    await response(events(), wire, drain)({}, wire.receive, wire.send)
    drain.stop()
    assert wire.body() == b"data: [DONE]\n\n"
    assert wire.closed == 1


def test_the_stop_comes_before_uvicorns_cut() -> None:
    """Two seconds before the drain's end; half way through a drain shorter than four."""
    assert stop_after(60) == 58
    assert stop_after(4) == 2
    assert stop_after(1) == 0.5

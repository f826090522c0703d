"""The client going away while its request is worked on: the work is cancelled at once, a
whole answer's pipeline call (its backend stops generating, or never starts) as a stream's
events, so nothing is made for nobody and the pipeline accounts for it as abandoned (499).

ASGI says so with an ``http.disconnect`` from ``receive``, which nobody reads once the body is
in; a plain task reads it and cancels the working task, in place of Starlette's task group (for
streams, about 3.5% less CPU per request; bench/README.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was sent; the work on it was cancelled."""


async def unless_gone(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result, awaited in this task while another listens on ``receive`` for the
    client's disconnect, which cancels it and raises ``ClientGone``. Call it once the request's
    body has been read (``await request.body()``): the listener takes every message after.
    A cancellation from elsewhere (the server stopping) stays a cancellation."""
    working = asyncio.current_task()
    assert working is not None
    gone = done = False

    async def listen() -> None:
        nonlocal gone
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a server whose receive fails: treat it as the client gone
            pass
        if not done:
            gone = True
            working.cancel()

    listener = asyncio.create_task(listen())
    try:
        result = await work
    except asyncio.CancelledError:
        if gone and working.uncancel() == 0:
            raise ClientGone from None
        raise  # cancelled from outside (the server is stopping), not by the listener
    finally:
        done = True
        listener.cancel()
    if gone:  # the work finished without letting the listener's cancellation through
        working.uncancel()
    return result

"""Every request still in flight when SIGTERM's drain runs out is answered, not cut: the one
place that ends them, streams and whole answers alike. ``Stopping`` watches the ``Drain`` for
each request; when it says stop, the request's task is cancelled (the pipeline, told by the
request's ``Halt``, accounts for it: 503 ``shutting_down``) and the client is told, in the words
of the API it called, that the gateway is shutting down and to retry:

- nothing sent yet (a whole answer, a stream whose backend has not sent its first chunk):
  a 503 ``server_shutting_down`` with ``retry-after`` and the request's receipt headers;
- a stream under way: its API's last error event (``EventStreamResponse`` registers it in the
  request's ``Stop``), then the end of the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ServiceUnavailable
from gateway.http.drain import RETRY_AFTER_S, SHUTTING_DOWN_BEFORE_ANSWER, Drain
from gateway.http.errors import gateway_error_response
from gateway.http.receipt import receipt_headers
from gateway.ids import request_id
from gateway.pipeline import Halt


@dataclass(slots=True)
class Stop:
    """One request's end as the drain sees it (``scope["state"]["stop"]``): the pipeline's
    ``Halt``, and once a stream is under way, the call that gives its API's last event."""

    halt: Halt = field(default_factory=Halt)
    last_event: Callable[[], bytes] | None = None


def stop_of(scope: Scope) -> Stop:
    """The request's ``Stop`` (a fresh one, never stopped, where ``Stopping`` is not in front:
    an app built without it, as some tests build one)."""
    stop = scope.get("state", {}).get("stop")
    return stop if isinstance(stop, Stop) else Stop()


class Stopping:
    """Pure ASGI middleware: each HTTP request, stopped by the ``Drain`` before its response
    ended, is answered as the module says instead of being cut by uvicorn."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        working = asyncio.current_task()
        assert working is not None
        stop = Stop()
        scope.setdefault("state", {})["stop"] = stop
        started = done = False

        async def sending(message: Message) -> None:
            nonlocal started, done
            # Counted as sent once handed over: a cancellation inside ``send`` comes after
            # uvicorn wrote the bytes (it only waits for the socket to drain).
            started = True
            done = message["type"] == "http.response.body" and not message.get("more_body")
            await send(message)

        def on_stop() -> None:
            if not done:
                stop.halt.stopping = True
                working.cancel()

        unwatch = self.drain.watch(on_stop)
        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if not stop.halt.stopping or working.uncancel() > 0:
                raise  # cancelled by uvicorn itself (or by both): nothing more is sent
        finally:
            unwatch()
        if stop.halt.stopping and not done:
            await self._answer(scope, receive, send, stop, started=started)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, stop: Stop, *, started: bool
    ) -> None:
        if started:
            if stop.last_event is not None:  # else a whole answer half sent: nothing to add
                body = stop.last_event()
                await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        receipt = stop.halt.receipt  # None: stopped before the pipeline had the request
        headers = receipt_headers(receipt) if receipt else {"x-request-id": request_id()}
        error = ServiceUnavailable(
            SHUTTING_DOWN_BEFORE_ANSWER, code="server_shutting_down", retry_after=RETRY_AFTER_S
        )
        await gateway_error_response(error, headers, scope["path"])(scope, receive, send)

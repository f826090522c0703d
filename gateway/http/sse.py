"""Server-sent events whose clean-up runs however the response ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.http.disconnect import ClientGone, unless_gone
from gateway.http.drain import Drain


class EventStreamResponse(StreamingResponse):
    """An SSE response whose ``on_close`` runs however the response ends: finished, client
    gone before the first byte, cancelled mid-stream, or stopped by the server's ``drain``
    (then ``on_stop`` accounts for it so and gives its last event, in the API's words)."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]],
        drain: Drain,
        on_stop: Callable[[], bytes],
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._on_close = on_close
        self._drain = drain
        self._on_stop = on_stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the events until they end, the client goes away (``unless_gone``) or the
        drain says stop (this task cancelled, then the last event sent)."""
        working = asyncio.current_task()
        assert working is not None
        started = done = stopped = False

        async def sending(message: Message) -> None:
            nonlocal started, done
            await send(message)
            started = True
            done = message["type"] == "http.response.body" and not message.get("more_body")

        def stop() -> None:
            nonlocal stopped
            if not done:
                stopped = True
                working.cancel()

        unwatch = self._drain.watch(stop)
        try:
            try:
                with contextlib.suppress(ClientGone):
                    await unless_gone(receive, self.stream_response(sending))
                done = True
            except asyncio.CancelledError:
                if not stopped or working.uncancel() > 0:
                    raise  # cancelled by uvicorn itself (or by both): nothing more is sent
                if not done:  # else the stop came as the last byte went
                    await self._last_event(send, started)
        finally:
            done = True
            unwatch()
            await self._events.aclose()
            await self._on_close()

    async def _last_event(self, send: Send, started: bool) -> None:
        if not started:
            start = {"type": "http.response.start", "status": self.status_code}
            await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self._on_stop(), "more_body": False})

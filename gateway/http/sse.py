"""Server-sent events whose clean-up runs however the response ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.http.disconnect import ClientGone, unless_gone
from gateway.http.stopping import stop_of


class EventStreamResponse(StreamingResponse):
    """An SSE response whose ``on_close`` runs however the response ends: finished, client
    gone before the first byte, or cancelled mid-stream (by uvicorn, or by ``Stopping`` as the
    server's drain runs out: ``on_stop`` then gives the stream's last event, in its API's
    words)."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]],
        on_stop: Callable[[], bytes],
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._on_close = on_close
        self._on_stop = on_stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the events until they end or the client goes away (``unless_gone``)."""
        stop_of(scope).last_event = self._on_stop
        try:
            with contextlib.suppress(ClientGone):
                await unless_gone(receive, self.stream_response(send))
        finally:
            await self._events.aclose()
            await self._on_close()

"""Server-sent events whose clean-up runs however the response ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    """An SSE response whose ``on_close`` runs however the response ends: finished, client
    gone before the first byte, or cancelled mid-stream."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(receive, send)
        finally:
            await self._events.aclose()
            await self._on_close()

    async def _stream(self, receive: Receive, send: Send) -> None:
        """Send the events until they end or the client goes away. A plain task listens for
        the disconnect and cancels this one, in place of Starlette's task group per stream
        (about 3.5% less CPU per streamed request; bench/README.md)."""
        streaming = asyncio.current_task()
        assert streaming is not None
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
                streaming.cancel()

        listener = asyncio.create_task(listen())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone or streaming.uncancel() > 0:
                raise  # cancelled from outside (the server is stopping), not by the listener
        finally:
            done = True
            listener.cancel()

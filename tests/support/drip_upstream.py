"""An OpenAI-compatible upstream that streams a chat completion as slowly as the test says: it
lists its one model (``GET /v1/models``, for the gateway's health check) and answers every
``POST`` with an SSE stream that sends one content chunk (``PIECE``, one token) for each
``release``d, then waits for more, never ending on its own.

    async with DripUpstream() as upstream:
        ...  # an `openai_compat` backend with base_url=upstream.base_url, model=upstream.MODEL
        upstream.release(5)  # every stream sends five more pieces, as soon as it can

It runs on the test's event loop (an async test); the gateway under test is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType

MODEL = "drip-model"
PIECE = " token"  # one o200k_base token
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"connection: close\r\n\r\n"
)


def _event(delta: dict[str, str]) -> bytes:
    chunk = {
        "id": "chatcmpl-drip",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class DripUpstream:
    MODEL = MODEL
    PIECE = PIECE

    def __init__(self) -> None:
        self.released = 0  # pieces every stream may send
        self._server: asyncio.Server | None = None
        # Connections still open when the test ends are closed by __aexit__: Python 3.11's
        # Server.close() leaves them, and one collected later warns inside another test.
        self._open: set[asyncio.StreamWriter] = set()
        self._more = asyncio.Event()  # set (and replaced) at each release

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def release(self, count: int) -> None:
        self.released += count
        more, self._more = self._more, asyncio.Event()
        more.set()

    async def __aenter__(self) -> DripUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET "):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(_MODELS), _MODELS)
                    )
                    await writer.drain()
                    continue
                await self._drip(reader, writer)
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._open.discard(writer)
            writer.close()

    async def _drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One stream: its pieces as they are released, until the caller goes away."""
        gone = asyncio.ensure_future(reader.read())  # EOF: the caller closed (or was killed)
        try:
            writer.write(_HEAD + _event({"role": "assistant", "content": ""}))
            sent = 0
            while not gone.done():
                more = asyncio.ensure_future(self._more.wait())
                while sent < self.released:
                    writer.write(_event({"content": PIECE}))
                    sent += 1
                await writer.drain()
                await asyncio.wait({gone, more}, return_when=asyncio.FIRST_COMPLETED)
                more.cancel()
        finally:
            gone.cancel()

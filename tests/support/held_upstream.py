"""An OpenAI-compatible upstream that never answers a completion: it lists its one model
(``GET /v1/models``, for the gateway's health check) and holds every ``POST`` open, counting
them, so a test knows a request has reached its backend and is being worked on.

    async with HeldUpstream() as upstream:
        ...  # an `openai_compat` backend with base_url=upstream.base_url, model=upstream.MODEL
        await upstream.until_held(2)  # two requests are with the backend now

It runs on the test's event loop (an async test); the gateway under test is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import TracebackType

MODEL = "held-model"
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


class HeldUpstream:
    MODEL = MODEL

    def __init__(self) -> None:
        self.held = 0  # completions received and never answered
        self._server: asyncio.Server | None = None
        # Connections still open when the test ends are closed by __aexit__: Python 3.11's
        # Server.close() leaves them, and one collected later warns inside another test.
        self._open: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> HeldUpstream:
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

    async def until_held(self, count: int, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while self.held < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.held} of {count} requests reached the upstream")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

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
                self.held += 1
                self._changed.set()
                await reader.read()  # held until the caller goes away
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._open.discard(writer)
            writer.close()

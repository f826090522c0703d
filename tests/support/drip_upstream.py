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
import json

from tests.support.raw_upstream import RawUpstream

MODEL = "drip-model"
PIECE = " token"  # one o200k_base token
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


class DripUpstream(RawUpstream):
    MODEL = MODEL
    PIECE = PIECE

    def __init__(self) -> None:
        super().__init__()
        self.released = 0  # pieces every stream may send
        self._more = asyncio.Event()  # set (and replaced) at each release

    def release(self, count: int) -> None:
        self.released += count
        more, self._more = self._more, asyncio.Event()
        more.set()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

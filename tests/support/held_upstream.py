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
import time

from tests.support.raw_upstream import RawUpstream

MODEL = "held-model"


class HeldUpstream(RawUpstream):
    MODEL = MODEL

    def __init__(self) -> None:
        super().__init__()
        self.held = 0  # completions received and never answered
        self._changed = asyncio.Event()

    async def until_held(self, count: int, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while self.held < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.held} of {count} requests reached the upstream")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held += 1
        self._changed.set()
        await reader.read()  # held until the caller goes away

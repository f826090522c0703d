"""Concurrent clients for the fault tests: each sends chat completions (plain and streamed, in
turn) until told to stop, and every exchange is kept, with the request id the gateway gave it.

Waiting is driven by the traffic itself: ``until(predicate)`` re-checks its predicate every time
an exchange starts or ends, so a test waits for "40 answers" or "the outbox has rows" without
sleeping, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx

DONE_LINE = "data: [DONE]"
PROMPTS = (
    "hello there",
    "Prove step by step that the square root of 2 is irrational, then generalise the argument "
    "to every integer that is not a perfect square and explain each step of the proof.",
)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and what came back of it."""

    request_id: str | None  # the x-request-id header; None when no response head arrived
    status: int | None
    stream: bool
    complete: bool  # the whole body arrived (a stream: through ``data: [DONE]``)
    error: str | None  # the transport error that cut the exchange short, if any
    seconds: float


class Load:
    """``clients`` concurrent clients on one ``httpx.AsyncClient``. A client stops at the first
    transport error (the server is gone) or when ``stop()`` is called."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        clients: int = 8,
        prompts: Sequence[str] = PROMPTS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = http
        self._clients = clients
        self._prompts = tuple(prompts)
        self._headers = dict(headers or {})
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = 0
        self.exchanges: list[Exchange] = []
        # ids of streams whose head arrived, body still coming → the backend that answers them
        self.streaming: dict[str, str] = {}

    @property
    def answered(self) -> int:
        """Exchanges whose whole response arrived."""
        return sum(1 for e in self.exchanges if e.complete)

    async def __aenter__(self) -> Load:
        self._running = self._clients
        self._tasks = [
            asyncio.create_task(self._client(i), name=f"load-client-{i}")
            for i in range(self._clients)
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None:
            await self.join()
            return
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def stop(self) -> None:
        self._stopping.set()

    async def join(self, within: float = 30.0) -> None:
        """Wait for every client to end (after ``stop()``, or a transport error)."""
        async with asyncio.timeout(within):
            for task in self._tasks:
                await task

    async def until(self, predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
        """Return once ``predicate()`` holds, checking it whenever an exchange starts or ends;
        fail after ``within`` seconds, or when every client has ended without it holding."""

        def ready() -> bool:
            return predicate() or self._running == 0

        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise AssertionError(f"not within {within} s: {what} ({self.summary()})") from None
        if not predicate():
            raise AssertionError(f"the clients ended before: {what} ({self.summary()})")

    def streaming_from(self, backend: str) -> int:
        """How many streams of ``backend`` are half sent now."""
        return sum(1 for answering in self.streaming.values() if answering == backend)

    def summary(self) -> str:
        errors = sorted({e.error for e in self.exchanges if e.error})
        return (
            f"{len(self.exchanges)} sent, {self.answered} answered, "
            f"{len(self.streaming)} streams open, errors {errors}"
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _client(self, index: int) -> None:
        turn = index
        try:
            while not self._stopping.is_set():
                prompt = self._prompts[turn % len(self._prompts)]
                stream = (turn // len(self._prompts)) % 2 == 1
                turn += 1
                exchange = await (self._stream(prompt) if stream else self._complete(prompt))
                self.exchanges.append(exchange)
                await self._notify()
                if exchange.error is not None:
                    return
        finally:
            self._running -= 1
            await self._notify()

    def _body(self, prompt: str, stream: bool) -> dict[str, object]:
        return {
            "model": "auto",
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }

    async def _complete(self, prompt: str) -> Exchange:
        started = time.perf_counter()
        try:
            response = await self._http.post(
                "/v1/chat/completions", json=self._body(prompt, False), headers=self._headers
            )
        except httpx.TransportError as exc:
            return Exchange(None, None, False, False, type(exc).__name__, _since(started))
        return Exchange(
            response.headers.get("x-request-id"),
            response.status_code,
            False,
            True,
            None,
            _since(started),
        )

    async def _stream(self, prompt: str) -> Exchange:
        started = time.perf_counter()
        rid: str | None = None
        status: int | None = None
        done = False
        try:
            async with self._http.stream(
                "POST", "/v1/chat/completions", json=self._body(prompt, True), headers=self._headers
            ) as response:
                rid, status = response.headers.get("x-request-id", "-"), response.status_code
                self.streaming[rid] = response.headers.get("x-tiergate-backend", "")
                await self._notify()
                try:
                    async for line in response.aiter_lines():
                        done = done or line == DONE_LINE
                finally:
                    self.streaming.pop(rid, None)
        except httpx.TransportError as exc:
            return Exchange(rid, status, True, False, type(exc).__name__, _since(started))
        # A stream that failed before its head answers with a JSON error, complete as it is.
        complete = done or (status is not None and status != 200)
        return Exchange(rid, status, True, complete, None, _since(started))


def _since(started: float) -> float:
    return time.perf_counter() - started

"""A scripted backend, shipped for tests and demos (in the spirit of ``httpx.MockTransport``).

Each request consumes the next step of the script (cycling when the script runs out, unless
steps were ``enqueue``-d, which are used first). A step answers text, fails with one of the
adapter errors, waits first, or streams a few chunks and then fails. Every request received is
kept in ``requests`` so a test can see exactly what the router sent.

Token counts are whitespace words: deterministic and good enough for a fake.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from itertools import cycle
from typing import Any

from adapters.base import BackendInfo, BlockingComplete, Health
from adapters.capabilities import Capabilities, defaults_for
from adapters.chat import (
    ChatRequest,
    Chunk,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from adapters.config import FakeConfig, FakeStep
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)


def _error(name: str, step: FakeStep) -> BackendError:
    match step.error:
        case "unavailable":
            return BackendUnavailable(name, "scripted failure: unavailable")
        case "server_error":  # as an upstream answering HTTP 503 says it
            return BackendUnavailable(name, "scripted failure: HTTP 503", status_code=503)
        case "timeout":
            return BackendTimeout(name, "scripted failure: timeout")
        case "rate_limited":
            return BackendRateLimited(
                name, "scripted failure: rate limited", step.retry_after_s, status_code=429
            )
        case "rejected":
            return BackendRejected(name, "scripted failure: rejected", status_code=400)
        case "unauthorized":  # as an upstream refusing the gateway's own key says it
            return BackendRejected(
                name, "scripted failure: unauthorized; check FAKE_API_KEY", status_code=401
            )
        case _:
            return BackendBadResponse(name, "scripted failure: bad response")


def _vector(text: str, size: int) -> tuple[float, ...]:
    digest = hashlib.blake2b(text.encode(), digest_size=64).digest()
    return tuple(round(digest[i % 64] / 255.0 - 0.5, 6) for i in range(size))


def _calls(step: FakeStep) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(id=f"call_fake_{i}", name=c.name, arguments=c.arguments)
        for i, c in enumerate(step.tool_calls)
    )


def _logprobs(step: FakeStep, request: ChatRequest, pieces: list[str]) -> Any:
    """The scripted log-probs as OpenAI's ``logprobs`` object, one entry per word."""
    if not (request.logprobs and step.logprobs):
        return None
    values = [step.logprobs[min(i, len(step.logprobs) - 1)] for i in range(len(pieces))]
    content = [
        {"token": p, "logprob": v, "bytes": list(p.encode()), "top_logprobs": []}
        for p, v in zip(pieces, values, strict=True)
    ]
    return {"content": content, "refusal": None}


def _words(text: str) -> list[str]:
    """Split keeping the spaces, so the pieces join back to the original text."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else " " + word)
    return [p for p in pieces if p]


class FakeBackend(BlockingComplete):
    """A backend that answers from a script. See the module docstring. Its blocking
    ``complete()`` is ``acomplete()``, as for every adapter."""

    def __init__(self, name: str, config: FakeConfig | None = None) -> None:
        self._name = name
        self._config = config or FakeConfig(type="fake")
        self._script = cycle(self._config.script)
        self._queue: deque[FakeStep] = deque()
        self.requests: list[ChatRequest] = []
        self.closed = False
        self.prewarmed = False

    @classmethod
    def scripted(cls, name: str, *steps: FakeStep | str, **config: object) -> FakeBackend:
        """``FakeBackend.scripted("b", "hello", FakeStep(error="timeout"))``."""
        script = tuple(FakeStep(reply=s) if isinstance(s, str) else s for s in steps)
        return cls(name, FakeConfig.model_validate({"type": "fake", **config, "script": script}))

    def enqueue(self, *steps: FakeStep | str) -> None:
        """Answer the next requests with these steps, before the script resumes."""
        self._queue.extend(FakeStep(reply=s) if isinstance(s, str) else s for s in steps)

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def context_window(self) -> int | None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        """The fake's defaults (everything a test may script); a policy narrows them."""
        return defaults_for(self._config)

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=self._name, model_id=self._config.model, extra={"type": "fake"})

    def _next(self, request: ChatRequest) -> FakeStep:
        if self.closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        self.requests.append(request)
        return self._queue.popleft() if self._queue else next(self._script)

    def _reply_pieces(self, step: FakeStep, request: ChatRequest) -> tuple[list[str], bool]:
        pieces = _words(step.reply)
        if request.max_tokens is not None and len(pieces) > request.max_tokens:
            return pieces[: request.max_tokens], True
        return pieces, False

    def _usage(self, request: ChatRequest, completion_tokens: int) -> Usage:
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    async def acomplete(self, request: ChatRequest) -> Completion:
        start = time.perf_counter()
        step = self._next(request)
        if step.delay_ms:
            await asyncio.sleep(step.delay_ms / 1000.0)
        if step.error is not None:
            raise _error(self._name, step)
        pieces, truncated = self._reply_pieces(step, request)
        elapsed = (time.perf_counter() - start) * 1000.0
        calls = _calls(step)
        return Completion(
            text="".join(pieces),
            finish_reason="length" if truncated else ("tool_calls" if calls else "stop"),
            usage=self._usage(request, len(pieces)),
            timings=Timings(latency_ms=elapsed, ttft_ms=elapsed, server_ms=elapsed),
            backend=self._name,
            model=self._config.model,
            tool_calls=calls,
            logprobs=_logprobs(step, request, pieces),
        )

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        start = time.perf_counter()
        step = self._next(request)
        if step.delay_ms:
            await asyncio.sleep(step.delay_ms / 1000.0)
        if step.error is not None and step.fail_after_chunks is None:
            raise _error(self._name, step)
        pieces, truncated = self._reply_pieces(step, request)
        pace = 1.0 / self._config.tokens_per_second if self._config.tokens_per_second else 0.0
        ttft: float | None = None
        for sent, piece in enumerate(pieces):
            if step.error is not None and sent == step.fail_after_chunks:
                raise _error(self._name, step)
            if pace:
                await asyncio.sleep(pace)
            if ttft is None:
                ttft = (time.perf_counter() - start) * 1000.0
            yield Chunk(delta=piece)
        if step.error is not None:
            raise _error(self._name, step)
        calls = _calls(step)
        for index, call in enumerate(calls):
            yield Chunk(tool_calls=(ToolCallDelta(index, call.id, call.name, call.arguments),))
        elapsed = (time.perf_counter() - start) * 1000.0
        yield Chunk(
            finish_reason="length" if truncated else ("tool_calls" if calls else "stop"),
            usage=self._usage(request, len(pieces)),
            timings=Timings(latency_ms=elapsed, ttft_ms=ttft, server_ms=elapsed),
            logprobs=_logprobs(step, request, pieces),
        )

    async def aembed(self, request: EmbeddingRequest) -> Embeddings:
        """Deterministic unit-free vectors (``dimensions`` long, default 8) from a hash of each
        input: the same text always gets the same vector."""
        start = time.perf_counter()
        step = self._next(ChatRequest(messages=()))
        if step.delay_ms:
            await asyncio.sleep(step.delay_ms / 1000.0)
        if step.error is not None:
            raise _error(self._name, step)
        size = request.dimensions or 8
        vectors = tuple(_vector(text, size) for text in request.inputs)
        tokens = sum(len(text.split()) for text in request.inputs)
        elapsed = (time.perf_counter() - start) * 1000.0
        return Embeddings(
            vectors=vectors,
            usage=Usage(prompt_tokens=tokens),
            timings=Timings(latency_ms=elapsed, server_ms=elapsed),
            backend=self._name,
            model=self._config.model,
        )

    async def prewarm(self) -> None:
        self.prewarmed = True

    async def health(self) -> Health:
        if self.closed:
            return Health(ok=False, detail="closed")
        return Health(ok=True, detail="scripted backend")

    async def aclose(self) -> None:
        self.closed = True


def fake_steps(replies: Iterable[str]) -> tuple[FakeStep, ...]:
    """Steps answering each of ``replies`` in turn."""
    return tuple(FakeStep(reply=r) for r in replies)

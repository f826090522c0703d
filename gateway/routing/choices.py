"""``n > 1``: more choices for one request, from the backend that answered the first.

No backend family takes ``n`` everywhere (Ollama and llama.cpp's in-process model have no such
parameter, Anthropic ignores it), so the gateway asks the chosen backend again, concurrently,
once per extra choice (streamed: one more stream per choice, merged as chunks arrive). A
request with a seed gets ``seed + i`` for choice ``i`` so the choices are distinct yet
reproducible. Every call's tokens count: the ledger prices what was run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator

from adapters.base import ChatRequest, Chunk, Completion, Usage
from adapters.errors import BackendTimeout
from gateway.routing.pool import BackendState


async def more_choices(
    state: BackendState, request: ChatRequest, count: int, timeout_s: float
) -> tuple[Completion, ...]:
    """``count`` more answers to ``request`` from ``state``'s backend, within ``timeout_s``.
    Raises the first ``BackendError``, or ``BackendTimeout``."""
    requests = extra_requests(request, count)
    state.in_flight += count
    try:
        async with asyncio.timeout(timeout_s):
            answers = await asyncio.gather(*(state.backend.acomplete(r) for r in requests))
    except TimeoutError as exc:
        raise BackendTimeout(
            state.name,
            f"the extra choices (n) took longer than {timeout_s:g} s; ask for fewer choices or "
            f"raise timeouts.per_try_s",
        ) from exc
    finally:
        state.in_flight -= count
    return tuple(answers)


def total_usage(first: Completion, more: tuple[Completion, ...]) -> Usage:
    """The tokens of every call behind the choices."""
    return sum_usage([first.usage, *(c.usage for c in more)])


def sum_usage(usages: list[Usage]) -> Usage:
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=sum(u.cached_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
    )


async def extra_stream(
    state: BackendState, request: ChatRequest, first_s: float, idle_s: float
) -> AsyncGenerator[Chunk, None]:
    """One more streamed choice from ``state``'s backend: its first chunk within ``first_s``
    (as an attempt's), each later one within ``idle_s``."""
    state.in_flight += 1
    stream = state.backend.astream(request)
    wait_s, setting = first_s, "timeouts.per_try_s"
    try:
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise BackendTimeout(
                    state.name,
                    f"a choice's stream went silent for {wait_s:g} s; ask for fewer choices or "
                    f"raise {setting}",
                ) from exc
            wait_s, setting = idle_s, "timeouts.stream_idle_s"
            yield chunk
    finally:
        state.in_flight -= 1
        await stream.aclose()


def extra_requests(request: ChatRequest, count: int) -> list[ChatRequest]:
    """The requests behind choices 1..count: ``seed + i`` when a seed was given."""
    return [
        dataclasses.replace(request, seed=request.seed + i) if request.seed is not None else request
        for i in range(1, count + 1)
    ]


async def merged(
    streams: list[AsyncGenerator[Chunk, None]],
) -> AsyncGenerator[tuple[int, Chunk], None]:
    """Every stream's chunks as they come, each with its stream's index. The first error
    raised by any stream is raised here; closing this closes every stream."""
    if len(streams) == 1:  # one choice: no tasks, no queue
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue[tuple[int, Chunk | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncGenerator[Chunk, None]) -> None:
        try:
            async for chunk in stream:
                queue.put_nowait((index, chunk))
            queue.put_nowait((index, None))
        except Exception as exc:  # handed to the reader, which raises it
            queue.put_nowait((index, exc))
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

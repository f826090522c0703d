"""``n > 1``: more choices for one request, from the backend that answered the first.

No backend family takes ``n`` everywhere (Ollama and llama.cpp's in-process model have no such
parameter, Anthropic ignores it), so the gateway asks the chosen backend again, concurrently,
once per extra choice. A request with a seed gets ``seed + i`` for choice ``i`` so the choices
are distinct yet reproducible. Every call's tokens count: the ledger prices what was run.
"""

from __future__ import annotations

import asyncio
import dataclasses

from adapters.base import ChatRequest, Completion, Usage
from adapters.errors import BackendTimeout
from gateway.pool import BackendState


async def more_choices(
    state: BackendState, request: ChatRequest, count: int, timeout_s: float
) -> tuple[Completion, ...]:
    """``count`` more answers to ``request`` from ``state``'s backend, within ``timeout_s``.
    Raises the first ``BackendError``, or ``BackendTimeout``."""
    requests = [
        dataclasses.replace(request, seed=request.seed + i) if request.seed is not None else request
        for i in range(1, count + 1)
    ]
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
    usages = [first.usage, *(c.usage for c in more)]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=sum(u.cached_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
    )

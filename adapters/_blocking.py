"""How the blocking teaching ``complete()`` runs over the async server contract.

Every adapter's ``complete()`` is its ``acomplete()`` run to the end on an event loop of the
call's own, as ``asyncio.run`` does: in the calling thread, or, when that thread is already
running a loop (a coroutine calling ``complete()``), in a worker thread while the caller waits
(blocking its loop, as any blocking call does). When the call ends, the loop's leftover tasks
are cancelled and the loop is closed.

An async HTTP client belongs to the loop that opened it, so an adapter keeps its clients in a
``ClientSlot``: callers on a long-lived loop (the gateway's) share one client, closed by the
backend's ``aclose``; a blocking call gets clients of its own, opened on its loop and closed
before that loop ends, so nothing a blocking call opened outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


async def _own_clients(coro: Awaitable[T]) -> T:
    """Await ``coro`` with clients of its own, closed when it ends."""
    opened: dict[ClientSlot[Any], Any] = {}
    token = _CALL_CLIENTS.set(opened)
    try:
        return await coro
    finally:
        _CALL_CLIENTS.reset(token)
        for slot, client in opened.items():
            with contextlib.suppress(Exception):  # the call's outcome stands; nothing to add
                await slot.close_client(client)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner() as runner:
        return runner.run(_own_clients(coro))


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a new event loop and return its result (or raise its
    exception); see the module docstring."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapters-blocking") as worker:
        return worker.submit(context.run, _run, coro).result()


class ClientSlot(Generic[T]):
    """An async client a backend opens on first use: one shared by the backend's callers on a
    long-lived loop (closed by ``aclose``), and one per blocking call (closed when the call
    ends). See the module docstring."""

    def __init__(self, open_client: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._open = open_client
        self._close = close
        self._shared: T | None = None

    def get(self) -> T:
        opened = _CALL_CLIENTS.get()
        if opened is not None:
            if self not in opened:
                opened[self] = self._open()
            return cast(T, opened[self])
        if self._shared is None:
            self._shared = self._open()
        return self._shared

    async def close_client(self, client: T) -> None:
        await self._close(client)

    async def aclose(self) -> None:
        """Close the shared client, if one was opened; the next ``get`` opens a new one."""
        client, self._shared = self._shared, None
        if client is not None:
            await self._close(client)


# The clients opened by the blocking call running in this context (None outside one).
_CALL_CLIENTS: ContextVar[dict[ClientSlot[Any], Any] | None] = ContextVar(
    "adapters_blocking_call_clients", default=None
)

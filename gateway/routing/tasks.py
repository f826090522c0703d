"""Ending the background tasks an object holds, at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any


async def cancel_all(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel every task of ``tasks`` (as it is now) and wait until each has ended, whatever it
    raised: shutdown goes on past a task that fails as it stops."""
    pending = list(tasks)  # a task that ends leaves its holder's set while we wait
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

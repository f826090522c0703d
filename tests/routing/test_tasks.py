"""``cancel_all``: shutdown's end to the background tasks an object holds."""

from __future__ import annotations

import asyncio

from gateway.routing.tasks import cancel_all


async def test_every_task_is_cancelled_and_waited_for_even_one_that_fails_as_it_stops() -> None:
    stopped: list[str] = []
    started = asyncio.Event()

    async def fails_as_it_stops() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            stopped.append("failing")
            raise RuntimeError("cleanup failed")

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append("waiting")

    async def done() -> None:
        return None

    tasks = {asyncio.create_task(fails_as_it_stops()), asyncio.create_task(waits())}
    finished = asyncio.create_task(done())
    await finished
    tasks.add(finished)
    await started.wait()
    held = set(tasks)
    for task in held:
        task.add_done_callback(tasks.discard)  # the set shrinks while it waits, as holders' do

    await cancel_all(tasks)

    assert all(task.done() for task in held)
    assert sorted(stopped) == ["failing", "waiting"]

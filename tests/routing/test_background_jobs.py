"""The bounded background jobs behind a canary's shadow calls and the adaptive judge's samples:
how many run, how many wait, what a failing job does, what a policy reload changes."""

from __future__ import annotations

import asyncio

from gateway.routing.background import Jobs


class Gate:
    """Jobs that wait to be released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.started = 0

    async def job(self) -> None:
        self.started += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1


def ignore(exc: Exception) -> None:
    raise AssertionError(f"no job should fail here: {exc!r}")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_concurrency_run_and_queue_wait() -> None:
    jobs, gate = Jobs("t"), Gate()
    jobs.bound(2, 1)
    for _ in range(3):
        assert not jobs.full
        jobs.spawn(gate.job, ignore)
    assert jobs.full
    assert len(jobs) == 3
    await settle()
    assert gate.running == 2  # the third waits for a slot
    gate.release.set()
    await jobs.drain()
    assert (gate.started, gate.most, len(jobs), jobs.full) == (3, 2, 0, False)


async def test_a_failing_job_goes_to_on_error_and_frees_its_slot() -> None:
    jobs, failures = Jobs("t"), list[Exception]()
    jobs.bound(1, 0)

    async def broken() -> None:
        raise ValueError("boom")

    jobs.spawn(broken, failures.append)
    await jobs.drain()
    assert [str(f) for f in failures] == ["boom"]
    gate = Gate()
    gate.release.set()
    jobs.spawn(gate.job, ignore)
    await jobs.drain()
    assert gate.started == 1


async def test_new_bounds_apply_to_new_jobs_only() -> None:
    jobs, old, new = Jobs("t"), Gate(), Gate()
    jobs.bound(1, 0)
    jobs.spawn(old.job, ignore)
    await settle()
    jobs.bound(1, 1)  # a reload: the running job keeps its slot, new jobs get fresh ones
    assert not jobs.full
    jobs.spawn(new.job, ignore)
    await settle()
    assert (old.running, new.running) == (1, 1)
    old.release.set()
    new.release.set()
    await jobs.drain()


async def test_aclose_cancels_running_and_waiting_jobs() -> None:
    jobs, gate = Jobs("t"), Gate()
    jobs.bound(1, 1)
    jobs.spawn(gate.job, ignore)
    jobs.spawn(gate.job, ignore)
    await settle()
    await jobs.aclose()
    await settle()
    assert (gate.started, gate.running, len(jobs)) == (1, 0, 0)  # the waiting one never began

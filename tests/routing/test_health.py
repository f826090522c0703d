"""Health checks run independently: a backend whose check never answers (a blackholed host)
neither delays the other backends' checks nor stretches the interval between them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.base import Health
from adapters.fake import FakeBackend
from gateway.metrics import Metrics
from gateway.routing.runtime import Runtime
from tests.http.helpers import factory_with

POLICY = """
version: 1
health: {interval_s: 0.05}
backends:
  stuck: {type: fake, model: m}
  fine: {type: fake, model: m}
tiers:
  - {name: only, backends: [stuck, fine]}
"""


class Blackholed(FakeBackend):
    """A health check that is sent and never answered (until released)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.checks = 0
        self.release = asyncio.Event()

    async def health(self) -> Health:
        self.checks += 1
        await self.release.wait()
        return Health(ok=True, detail="answered at last")


class Counting(FakeBackend):
    def __init__(self, name: str, enough: int) -> None:
        super().__init__(name)
        self.checks = 0
        self.enough = enough
        self.reached = asyncio.Event()

    async def health(self) -> Health:
        self.checks += 1
        if self.checks >= self.enough:
            self.reached.set()
        return Health(ok=True, detail="fine")


async def test_a_blackholed_check_does_not_hold_up_the_others(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    stuck, fine = Blackholed("stuck"), Counting("fine", enough=5)
    runtime = Runtime(policy, Metrics(), factory=factory_with({"stuck": stuck, "fine": fine}))
    runtime.start(watch=False)
    try:
        # Five checks of `fine` at a 0.05 s interval, while `stuck`'s first one hangs (a
        # shared round would wait for it: 5 s each).
        async with asyncio.timeout(3):
            await fine.reached.wait()
        assert stuck.checks == 1  # not checked again while its check is out
        stuck.release.set()
    finally:
        await runtime.aclose()

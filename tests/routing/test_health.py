"""Health checks run independently: a backend whose check never answers (a blackholed host)
neither delays the other backends' checks nor stretches the interval between them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.base import Health
from adapters.fake import FakeBackend
from gateway.metrics import Metrics
from gateway.routing.runtime import Runtime
from tests.http.helpers import factory_with, gateway, until

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


TINY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
tiers:
  - {name: only, backends: [tiny]}
"""


@pytest.mark.model
async def test_readyz_says_loaded_once_the_prewarm_has_loaded_the_model(tmp_path: Path) -> None:
    """The first scheduled check answers while the prewarm still loads the tiny model ("loads
    on first request"); the next is 15 s away. Was: /readyz kept that detail until then. Now
    the prewarm's end is published with a check of its own, after the one in flight."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TINY)
    async with gateway(policy, ledger=False) as (client, app):
        state = app.state.runtime.active.pool["tiny"]
        task = state.prewarm_task
        assert task is not None
        await until(task.done, "the prewarm to finish", 60)
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    tiny = response.json()["backends"]["tiny"]
    assert (tiny["warm"], tiny["healthy"]) == (True, True)
    assert tiny["detail"].startswith("loaded "), tiny["detail"]

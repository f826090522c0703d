"""SIGKILL while a backend works on a budgeted key's request, then a restart: the spend the
journal kept (the interrupted row's estimated cost) counts against the key's and its team's
budgets in Redis, not only in the ledger. Before, the request's reservation expired unsettled and
its cost reached the ledger after the counters had been seeded from it: spend that escaped."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from gateway.governance.budgets import Hold, to_nano
from gateway.ledger.db import make_engine
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.models import RequestRow
from tests.cache.conftest import redis_server, redis_url
from tests.faults.budgeted import budgeted_key, counters
from tests.http.live_server import WAIT_S, Server
from tests.support.held_upstream import HeldUpstream

__all__ = ["redis_server", "redis_url"]


def spent(redis_url: str, holds: list[Hold]) -> list[int | None]:
    import redis

    return counters(redis.Redis.from_url(redis_url), holds)


async def test_a_request_killed_at_its_backend_counts_against_its_budgets(
    tmp_path: Path, redis_url: str, servers: list[Server]
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    key, holds = await budgeted_key(ledger_url)

    async with HeldUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "version: 1\n"
            "backends:\n"
            f"  held: {{type: openai_compat, model: {upstream.MODEL}, "
            f'base_url: "{upstream.base_url}"}}\n'
            "tiers:\n"
            "  - {name: only, backends: [held]}\n"
            "pricing:\n"
            "  backends:\n"
            "    held: {usd_per_1m_input: 1.0, usd_per_1m_output: 4.0}\n"
        )
        env = {
            "TIERGATE_DATABASE_URL": ledger_url,
            "TIERGATE_OUTBOX_PATH": str(tmp_path / "outbox.db"),
            "TIERGATE_JOURNAL": "true",
            "TIERGATE_REDIS_URL": redis_url,
        }
        first = Server(policy, watch=False, env=env)
        servers.append(first)
        await asyncio.to_thread(first.wait_ready)
        prompt = {
            "model": "auto",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hello there"}],
        }
        async with httpx.AsyncClient(base_url=first.base_url, timeout=WAIT_S) as http:

            async def ask() -> str:
                headers = {"authorization": f"Bearer {key.key}"}
                try:
                    response = await http.post("/v1/chat/completions", json=prompt, headers=headers)
                except httpx.TransportError as exc:
                    return type(exc).__name__
                return f"HTTP {response.status_code}"

            asked = asyncio.create_task(ask())
            held = asyncio.create_task(upstream.until_held(1))
            await asyncio.wait({asked, held}, return_when=asyncio.FIRST_COMPLETED)
            assert not asked.done(), (asked.result(), first.log()[-3000:])
            await held  # admitted (its budgets seeded, a reservation made) and sent
            assert await asyncio.to_thread(spent, redis_url, holds) == [0, 0]
            first.proc.send_signal(signal.SIGKILL)
            seen = await asyncio.gather(asked)
        assert first.proc.wait(WAIT_S) == -signal.SIGKILL
        first.stop()
        assert not seen[0].startswith("HTTP"), seen

        again = Server(policy, watch=False, env=env)
        servers.append(again)
        await asyncio.to_thread(again.wait_ready)
        await asyncio.to_thread(again.wait_for, "ledger_outbox_replayed", left=0)
        again.stop()

    engine = make_engine(ledger_url)
    try:
        with engine.connect() as connection:
            (row,) = connection.execute(
                select(RequestRow.status, RequestRow.error_class, RequestRow.cost_usd)
            ).all()
    finally:
        engine.dispose()
    assert (row.status, row.error_class) == (499, INTERRUPTED)
    cost = to_nano(Decimal(str(row.cost_usd)))
    assert cost > 0
    # Both budgets count it, as they would have had the request ended: the ledger and the
    # counters agree.
    assert await asyncio.to_thread(spent, redis_url, holds) == [cost, cost]

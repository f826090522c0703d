"""What the budget fault tests kill a gateway over: a team with a budget and one key of it, on
a fresh ledger, and the Redis counters its requests should move."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import redis

from gateway.governance import store
from gateway.governance.budgets import Hold
from gateway.governance.store import Created, LimitsIn
from gateway.ledger.db import make_engine, upgrade


async def budgeted_key(ledger_url: str) -> tuple[Created, list[Hold]]:
    """Team ``search`` ($50) and its key ``svc`` ($5) on a ledger upgraded here; the key's
    budgets as holds, key first."""
    await asyncio.to_thread(upgrade, ledger_url)
    engine = make_engine(ledger_url)
    try:
        store.put_team(engine, "search", LimitsIn(budget_usd=Decimal("50")))
        key = store.create_key(engine, "svc", LimitsIn(budget_usd=Decimal("5")), team="search")
        grant = store.grant_of(engine, key.id)
    finally:
        engine.dispose()
    holds = [Hold.of(allowance, datetime.now(UTC)) for allowance in grant.budgets]
    assert [h.allowance.kind for h in holds] == ["key", "team"]
    return key, holds


def counters(client: redis.Redis, holds: list[Hold]) -> list[int | None]:
    """Each hold's ``spent`` counter in Redis (None: not seeded). Closes ``client``."""
    try:
        values = [client.get(f"tiergate:budget:{hold.name}:spent") for hold in holds]
    finally:
        client.close()
    return [None if v is None else int(v) for v in values]

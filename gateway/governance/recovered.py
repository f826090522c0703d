"""What a killed process had spent, charged to budgets when its journal is recovered.

A request reserves its worst case before its backend is asked (``budgets``) and, when it ends,
settles: its reservation dropped, its real cost added to the ``spent`` counters of its key's and
team's budgets. A process killed meanwhile never settles. Its reservation frees itself when it
expires (the request's deadline plus ``HOLD_MARGIN_S``), and the row its journal kept for the try
(``ledger.journal``: status 499, ``interrupted``, the prompt's estimated cost) reaches the ledger
at the next start, through the outbox. The counters were seeded from the ledger before that row
was there, so the backend call's cost would be in the ledger and the reports but in no counter:
spend that escaped its budgets.

A request that was answered settles within moments, but a process killed in those moments has its
row in the journal and its cost in no counter. The journal keeps such a row until its settlement
has landed in Redis, marking both ends (``ledger.journal``), so a recovered answered row marked
unsettled and not settled is one whose cost never reached the counters; any other was counted
already (or never counted in Redis) and is not charged again.

So at start, once ``journal_recovery`` has moved those rows to the outbox, each interrupted row's
cost, and each answered row's whose settlement had not landed, is added to the counters of its
key's budgets (its own and its team's), for the period of its time, as a settlement adds a
request's cost: in Redis, shared by every replica, or in this process's own counters without Redis.
A counter not seeded yet is left alone, as a settlement leaves it: its seed reads the ledger, where
the outbox puts the row within moments of the start. A recovered row is charged once: the journal
it came from is deleted as it is recovered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from decimal import Decimal

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.governance import store
from gateway.governance.budgets import Hold, to_nano
from gateway.governance.gate import Governor
from gateway.governance.grants import Grant
from gateway.governance.store import GovernanceError
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.journal_recovery import Recovered

log = structlog.get_logger("tiergate.governance")


async def charge_recovered(governor: Governor, engine: Engine, recovered: Recovered) -> int:
    """Charge the recovered rows whose cost is in no counter (interrupted ones, and answered
    ones whose settlement had not landed) to their keys' budgets; returns how many."""
    return await charge_interrupted(governor, engine, recovered.rows, recovered.unsettled)


async def charge_interrupted(
    governor: Governor,
    engine: Engine,
    entries: Iterable[LedgerEntry],
    unsettled: Collection[str] = (),
) -> int:
    """Charge each interrupted row among ``entries`` (the rows a killed process's journal
    held) to its key's budgets, and each ended row among ``unsettled`` (the ids whose
    settlement had not landed); returns how many were charged."""
    rows = [
        entry
        for entry in entries
        if entry.cost_usd is not None
        and entry.cost_usd > 0
        and (entry.error_class == INTERRUPTED or entry.id in unsettled)
    ]
    if not rows:
        return 0
    grants = await asyncio.to_thread(_grants, engine, {entry.key_id for entry in rows})
    charged, usd = 0, Decimal(0)
    for entry in rows:
        grant = grants.get(entry.key_id)
        holds = tuple(Hold.of(a, entry.ts) for a in grant.budgets) if grant is not None else ()
        if not holds:
            continue  # a bootstrap key, or a key without a budget: nothing counts its spend
        assert entry.cost_usd is not None
        governor.charge(holds, entry.id, to_nano(entry.cost_usd))
        charged, usd = charged + 1, usd + entry.cost_usd
    await governor.drain()
    if charged:
        log.info(
            "budget_interrupted_charged",
            rows=charged,
            cost_usd=f"{usd:.12f}",
            detail="requests a stopped process had sent to a backend, or answered without its "
            "cost reaching the counters: their cost now counts against their keys' budgets",
        )
    return charged


def _grants(engine: Engine, key_ids: set[str]) -> dict[str, Grant]:
    """The grants of these keys (bootstrap keys have none in the database); none when the
    database cannot be read."""
    grants: dict[str, Grant] = {}
    try:
        for key_id in sorted(key_ids):
            try:
                grants[key_id] = store.grant_of(engine, key_id)
            except GovernanceError:
                continue
    except SQLAlchemyError as exc:
        log.warning(
            "budget_interrupted_uncharged",
            error=str(exc).splitlines()[0][:200],
            detail="the keys could not be read: the recovered requests' cost is in the ledger "
            "but not in the budgets' counters until their period is read from it again",
        )
        return {}
    return grants

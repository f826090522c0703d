"""``charge_interrupted``: which recovered rows count against which budgets, in this process's
own counters (the Redis side, after a real SIGKILL: tests/faults/test_sigkill_budget.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine

from gateway.governance import store
from gateway.governance.budgets import UNSEEDED, Hold, MemoryBudgets, to_nano
from gateway.governance.gate import Governor
from gateway.governance.recovered import charge_interrupted, charge_recovered
from gateway.governance.store import LimitsIn
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.journal_recovery import Recovered
from tests.support.ledger_rows import ledger_entry

NOW = datetime.now(UTC)


async def test_only_interrupted_rows_of_budgeted_keys_are_charged(engine: Engine) -> None:
    store.put_team(engine, "eng", LimitsIn(budget_usd=Decimal("10")))
    budgeted = store.create_key(engine, "svc", LimitsIn(budget_usd=Decimal("2")), team="eng")
    unlimited = store.create_key(engine, "free", LimitsIn())
    grant = store.grant_of(engine, budgeted.id)
    holds = tuple(Hold.of(allowance, NOW) for allowance in grant.budgets)
    budgets = MemoryBudgets()
    for hold in holds:
        await budgets.seed(hold, to_nano(Decimal("0.5")), NOW)  # what the ledger said so far
    governor = Governor(budgets, None, engine)

    def interrupted(rid: str, key_id: str, cost: str | None) -> LedgerEntry:
        return ledger_entry(
            rid,
            ts=NOW,
            key_id=key_id,
            status=499,
            error_class=INTERRUPTED,
            cost_usd=None if cost is None else Decimal(cost),
        )

    entries = [
        interrupted("a", budgeted.id, "0.25"),
        interrupted("b", budgeted.id, "0.125"),
        ledger_entry("c", ts=NOW, key_id=budgeted.id, cost_usd=Decimal("1")),  # ended: settled
        interrupted("d", budgeted.id, None),  # unpriced
        interrupted("e", "tests", "1"),  # a bootstrap key: no budget in the database
        interrupted("f", unlimited.id, "1"),  # a key without a budget
    ]
    assert await charge_interrupted(governor, engine, entries) == 2

    got = await budgets.reserve(holds, [0], "probe", NOW.timestamp() + 60)
    spent = to_nano(Decimal("0.5")) + to_nano(Decimal("0.375"))
    assert got.left == (to_nano(Decimal("2")) - spent, to_nano(Decimal("10")) - spent)


async def test_a_counter_not_seeded_is_left_to_its_seed(engine: Engine) -> None:
    """Like a settlement: an unseeded period is read from the ledger later, the row with it."""
    key = store.create_key(engine, "svc", LimitsIn(budget_usd=Decimal("2")))
    (hold,) = (Hold.of(a, NOW) for a in store.grant_of(engine, key.id).budgets)
    budgets = MemoryBudgets()
    entry = ledger_entry(
        "a", ts=NOW, key_id=key.id, status=499, error_class=INTERRUPTED, cost_usd=Decimal("1")
    )
    await charge_interrupted(Governor(budgets, None, engine), engine, [entry])
    got = await budgets.reserve((hold,), [0], "probe", NOW.timestamp() + 60)
    assert got.index == UNSEEDED


async def test_an_answered_row_is_charged_unless_its_settlement_landed(engine: Engine) -> None:
    key = store.create_key(engine, "svc", LimitsIn(budget_usd=Decimal("2")))
    (hold,) = (Hold.of(a, NOW) for a in store.grant_of(engine, key.id).budgets)
    budgets = MemoryBudgets()
    await budgets.seed(hold, 0, NOW)
    entries = [
        ledger_entry("landed", ts=NOW, key_id=key.id, cost_usd=Decimal("1")),  # settled
        ledger_entry("lost", ts=NOW, key_id=key.id, cost_usd=Decimal("0.25")),
    ]
    recovered = Recovered(entries, frozenset({"lost"}))
    assert await charge_recovered(Governor(budgets, None, engine), engine, recovered) == 1
    got = await budgets.reserve((hold,), [0], "probe", NOW.timestamp() + 60)
    assert got.left == (to_nano(Decimal("2")) - to_nano(Decimal("0.25")),)

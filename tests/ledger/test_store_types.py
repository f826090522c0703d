"""``insert_batch`` stores what SQLAlchemy's own insert stores, whatever Python numbers the
entries hold: a ``float`` field may hold an ``int`` (type hints allow it). On PostgreSQL a batch
is one ``unnest`` of an array per column, and psycopg refused an array mixing ``int`` and
``float``, and with it the whole batch (the writer then inserted its rows one at a time)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select, text

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.ledger.store import insert_batch
from tests.support.ledger_rows import ledger_entry

FLOATS = ("score", "latency_ms", "ttft_ms", "server_ms", "load_ms", "quality")


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_ints_and_floats_in_one_batch_are_stored_as_sqlalchemy_stores_them(
    engine: Engine,
) -> None:
    whole = ledger_entry("a", **dict.fromkeys(FLOATS, 5), cascade_confidence=1)
    fractional = ledger_entry("b", **dict.fromkeys(FLOATS, 5.5), cascade_confidence=0.25)
    insert_batch(engine, [whole, fractional])  # before: DataError on PostgreSQL
    with engine.begin() as connection:
        for entry in (whole, fractional):
            row = dataclasses.asdict(dataclasses.replace(entry, id=f"orm-{entry.id}"))
            connection.execute(insert(RequestRow), [row])
    with engine.connect() as connection:
        stored = {r.id: r._asdict() for r in connection.execute(select(RequestRow))}
        rolled = connection.execute(text("SELECT sum(requests) FROM ledger_rollup_hourly"))
        assert rolled.scalar_one() == 4
    for name in ("a", "b"):
        batch, orm = stored[name], stored[f"orm-{name}"]
        assert {k: v for k, v in batch.items() if k != "id"} == {
            k: v for k, v in orm.items() if k != "id"
        }
    assert stored["a"]["latency_ms"] == 5.0
    assert stored["b"]["latency_ms"] == 5.5

"""Governance fixtures: a migrated ledger database, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from gateway.ledger.db import make_engine, upgrade
from tests.ledger import conftest as ledger_fixtures

pg_cluster = ledger_fixtures.pg_cluster
ledger_url = ledger_fixtures.ledger_url


@pytest.fixture
def db_url(ledger_url: str) -> str:
    """A ledger database at head (SQLite file or a fresh PostgreSQL database)."""
    upgrade(ledger_url)
    return ledger_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()

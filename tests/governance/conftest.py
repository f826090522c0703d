"""Governance fixtures: a migrated ledger database (SQLite and PostgreSQL) and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from gateway.ledger.db import make_engine, upgrade
from tests.cache.conftest import private_redis, redis_server, redis_url, store_url
from tests.ledger.conftest import ledger_url, pg_cluster

__all__ = ["ledger_url", "pg_cluster", "private_redis", "redis_server", "redis_url", "store_url"]


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

"""Governance fixtures: the ledger's databases (SQLite and PostgreSQL) and Redis."""

from __future__ import annotations

from tests.cache.conftest import private_redis, redis_server, redis_url, store_url
from tests.ledger.conftest import ledger_url, pg_cluster

__all__ = ["ledger_url", "pg_cluster", "private_redis", "redis_server", "redis_url", "store_url"]

"""Fault tests run against SQLite and PostgreSQL ledgers, like the ledger's own tests (the
``servers`` fixture they start gateways with is tests/conftest.py's)."""

from tests.ledger.conftest import ledger_url, pg_cluster

__all__ = ["ledger_url", "pg_cluster"]

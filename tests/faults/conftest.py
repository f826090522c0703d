"""Fault tests run against SQLite and PostgreSQL ledgers, like the ledger's own tests."""

from collections.abc import Iterator

import pytest

from tests.http.live_server import Server
from tests.ledger.conftest import ledger_url, pg_cluster

__all__ = ["ledger_url", "pg_cluster"]


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Gateways a test starts: each is stopped at the end, whatever the outcome."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()

"""Ledger fixtures: every ledger test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    """The PostgreSQL on this machine (or a temporary one); fails, never skips, without one."""
    try:
        with postgres.cluster() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger database URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server: postgres.Cluster = request.getfixturevalue("pg_cluster")
    with postgres.database(server) as url:
        yield url


@pytest.fixture
def pg_db(pg_cluster: postgres.Cluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own."""
    with postgres.database(pg_cluster) as url:
        yield url

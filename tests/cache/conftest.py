"""Cache fixtures: the shared Redis through its dedicated test index, private redis-servers
for the fault tests, and (re-exported) the ledger's database fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledger.conftest import ledger_url, pg_cluster
from tests.support import redis as test_redis

__all__ = ["ledger_url", "pg_cluster"]  # fixtures the cache's ledger tests use


@pytest.fixture(scope="session")
def redis_server() -> Iterator[test_redis.RedisServer]:
    """The Redis on 127.0.0.1:6379, or a private one; fails (never skips) without either."""
    try:
        with test_redis.shared() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def redis_url(redis_server: test_redis.RedisServer) -> Iterator[str]:
    """The URL of the shared Redis's test index, empty, flushed again after the test."""
    with test_redis.fresh_database(redis_server) as url:
        yield url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[test_redis.PrivateRedis]:
    """A redis-server this test owns (to stop, kill, freeze), started; ended afterwards."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = test_redis.PrivateRedis(directory)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Run the test once on the in-process store (None) and once on the shared Redis."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url

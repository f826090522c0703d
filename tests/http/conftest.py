"""Fixtures for the gateway tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cache.conftest import private_redis
from tests.http.live_server import Server

__all__ = ["private_redis", "serve"]


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start servers for a test; each is stopped at the end."""
    servers: list[Server] = []

    def start(policy: Path, *, watch: bool, workers: int = 1) -> Server:
        server = Server(policy, watch=watch, workers=workers)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()

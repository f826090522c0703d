"""Builders shared by the gateway tests: policies over shipped fake backends, the app in-process
or behind a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from adapters import load_backend
from adapters.base import Backend
from adapters.config import BackendConfig
from adapters.fake import FakeBackend
from gateway.app import create_app
from gateway.policy import Policy, parse_policy
from gateway.routing.pool import BackendFactory
from gateway.settings import Settings
from gateway.tracing import Tracing

TWO_TIERS = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "small answer"}]}
  big: {type: fake, model: big-model, script: [{reply: "big answer"}]}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
"""


def policy_from(text: str) -> Policy:
    return parse_policy(text.encode(), source="test.yaml", base_dir=Path("."))


def factory_with(fakes: Mapping[str, Backend]) -> BackendFactory:
    """Use the given backend objects for their names, the real adapters for the rest."""

    def build(name: str, config: BackendConfig) -> Backend:
        return fakes[name] if name in fakes else load_backend(name, config)

    return build


def fakes(*names: str) -> dict[str, FakeBackend]:
    return {name: FakeBackend.scripted(name, f"{name} answer") for name in names}


@contextlib.asynccontextmanager
async def gateway(
    policy_file: Path,
    *,
    backends: Mapping[str, Backend] | None = None,
    **settings: object,
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A fresh app with its lifespan running, and an httpx client talking to it in-process.
    Its ledger is a SQLite file next to the policy. ``tracing=`` gives the app a ``Tracing``
    (the rest are settings)."""
    tracing = settings.pop("tracing", None)
    assert tracing is None or isinstance(tracing, Tracing)
    options: dict[str, object] = {
        "policy": policy_file,
        "watch_policy": False,
        "database_url": f"sqlite:///{policy_file.parent / 'ledger.db'}",
        "outbox_path": policy_file.parent / "outbox.db",
        **settings,
    }
    config = Settings(**options)  # type: ignore[arg-type]
    app = create_app(
        config,
        backend_factory=factory_with(backends or {}),
        configure_logs=False,
        tracing=tracing,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, app


async def until(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within_s`` seconds saying ``what``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` (lifespan already running) behind a real uvicorn on a free loopback port, so a
    client can really hang up mid-stream."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, log_level="error")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start")
        assert not task.done(), "uvicorn stopped at once"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()

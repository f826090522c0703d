"""``/readyz`` and Redis: the cache store's and governance's real state, asked when the probe
comes (not what the last request happened to see), against a real Redis that a test stops,
freezes and starts again, and a port where nothing listens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from structlog.testing import capture_logs

from gateway.governance.readiness import READY_WAIT_S
from tests.http.helpers import TWO_TIERS, fakes, gateway
from tests.support.redis import PrivateRedis

CLIENT, ADMIN = "k-app-1111", "k-admin-3333"
RECOVERY_S = 30.0  # Redis back → readiness back: the gate tries again every 5 s


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def app_on(tmp_path: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(
        policy,
        backends=fakes("small", "big"),
        ledger=False,
        redis_url=SecretStr(url),
        api_keys=f"app:{CLIENT}",
        admin_key=ADMIN,
    ) as pair:
        await pair[1].state.runtime.active.pool.probe_all()
        yield pair


async def ready(client: httpx.AsyncClient, key: str = ADMIN) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz", headers={"authorization": f"Bearer {key}"})
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_an_unreachable_redis_is_degraded_before_any_request(tmp_path: Path) -> None:
    """Nothing listens at TIERGATE_REDIS_URL: /readyz says degraded (200: the gateway serves,
    uncached, with limits per process), naming the store and where the limits are; the Redis
    error is for operators only."""
    port = closed_port()
    with capture_logs() as logs:
        async with app_on(tmp_path, f"redis://127.0.0.1:{port}/11") as (client, _app):
            status, body = await ready(client)
            seen_status, seen = await ready(client, CLIENT)
    assert status == seen_status == 200
    assert body["status"] == seen["status"] == "degraded"
    assert body["cache"]["store"] == "redis"
    assert body["cache"]["state"] == "degraded"
    assert body["governance"]["store"] == "redis"
    assert body["governance"]["state"] == "degraded"
    assert body["governance"]["limits"] == "per_process"
    assert "per process while Redis is away" in body["governance"]["detail"]
    assert "redis unavailable" in body["cache"]["detail"]
    # a client key sees the states, not the reasons (Redis's address, its error)
    for part in ("cache", "governance"):
        assert seen[part] == {**body[part], "detail": None}
    assert str(port) not in str(seen)
    assert "operators" in seen["detail"]
    events = {e["event"] for e in logs}
    assert {"rate_limits_local", "budgets_local"} <= events


async def test_readiness_follows_redis_away_and_back(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Redis up: ready, shared limits. Stopped: degraded at the next probe, no request needed.
    Started again: ready again (the probe's PING is the trial that brings Redis back)."""
    async with app_on(tmp_path, private_redis.url(11)) as (client, _app):
        status, body = await ready(client)
        assert (status, body["status"]) == (200, "ready"), body
        assert body["cache"]["state"] == "ok"
        assert body["governance"] == {
            "store": "redis",
            "state": "ok",
            "limits": "shared",
            "detail": "shared through Redis",
        }

        private_redis.stop()
        status, body = await ready(client)
        assert (status, body["status"]) == (200, "degraded"), body
        assert body["cache"]["state"] == "degraded"
        assert body["governance"]["limits"] == "per_process"

        private_redis.start()
        deadline = time.monotonic() + RECOVERY_S
        while body["status"] != "ready":
            assert time.monotonic() < deadline, f"not ready {RECOVERY_S} s after Redis: {body}"
            await asyncio.sleep(0.2)
            status, body = await ready(client)
        assert status == 200
        assert body["cache"]["state"] == "ok"
        assert body["governance"]["limits"] == "shared"


async def test_a_frozen_redis_does_not_hold_the_probe(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Redis accepts and never answers (SIGSTOP): /readyz still answers within its bound
    (a Kubernetes probe gives up after 1 s), degraded, the limits still shared until the gate's
    own bound says Redis is away."""
    async with app_on(tmp_path, private_redis.url(11)) as (client, _app):
        _, body = await ready(client)  # connected
        assert body["status"] == "ready", body
        private_redis.freeze()
        try:
            started = time.monotonic()
            status, body = await ready(client)
            took = time.monotonic() - started
        finally:
            private_redis.thaw()
    assert (status, body["status"]) == (200, "degraded"), body
    assert took < READY_WAIT_S + 0.5, took
    assert body["governance"]["state"] == "degraded"
    assert "has not answered a PING" in body["governance"]["detail"]

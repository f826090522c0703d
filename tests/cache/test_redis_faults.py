"""Redis failing under a running gateway: stopped (SIGTERM, SIGKILL) and frozen (SIGSTOP) in the
middle of a test. Requests keep succeeding, each within the Redis timeout's bound (no stall of
seconds); ``/readyz`` says degraded and why; the breaker stops trying Redis after a few
failures; and once Redis is back, caching resumes and ``/readyz`` is ready again.

Always on a private redis-server this test owns, never the machine's shared Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from adapters.fake import FakeBackend
from gateway.cache.store import RedisStore
from gateway.routing.breaker import Breaker
from tests.http.helpers import gateway
from tests.support.redis import PrivateRedis
from tests.support.tcp_proxy import TcpProxy

CHAT = "/v1/chat/completions"
TIMEOUT_MS = 50.0  # the gateway's Redis bound (TIERGATE_REDIS_TIMEOUT_MS, its default)
# A request makes at most two Redis calls in turn (the prefix registry, then the response
# cache), each cut off at twice the timeout: 0.2 s, plus the in-process app and a fake backend.
# Without the bound a frozen Redis stalls a request for good (redis-py has no socket timeout by
# default) and a dead one for its reconnect back-off; the bound leaves room for a busy CI
# machine (a loaded 2-core box once took 0.52 s) while still telling "bounded" from "stalled".
REQUEST_BOUND_S = 2 * 2 * TIMEOUT_MS / 1000 + 1.3
RECOVERY_S = 30.0  # the breaker's cooldown is 5 s; a probe then closes it

POLICY = """
version: 1
backends:
  a: {type: fake, model: shared-model, script: [{reply: "answer from a"}]}
  b: {type: fake, model: shared-model, script: [{reply: "answer from b"}]}
tiers:
  - {name: local, backends: [a, b]}
cache:
  prefixes: {block_tokens: 16}
"""


def chat(prompt: str, **fields: Any) -> dict[str, Any]:
    system = "You are a careful assistant. " * 12  # a few prefix blocks, so the registry is used
    return {
        "model": "auto",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "temperature": 0,
        **fields,
    }


@contextlib.asynccontextmanager
async def app_on(tmp_path: Path, url: str) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    backends = {name: FakeBackend.scripted(name, f"answer from {name}") for name in ("a", "b")}
    async with gateway(
        path,
        backends=backends,
        ledger=False,
        redis_url=SecretStr(url),
        redis_timeout_ms=TIMEOUT_MS,
    ) as pair:
        yield pair


async def timed(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.post(CHAT, json=body)
    return response, time.perf_counter() - started


async def ready(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text  # the backends are fine: still serving
    body: dict[str, Any] = response.json()
    return body


async def outage_requests(client: httpx.AsyncClient, label: str, n: int = 12) -> list[str]:
    """Send ``n`` requests (sequential ones, a concurrent burst, streams) while Redis is
    failing; each must succeed within the bound. Returns their cache labels."""
    labels: list[str] = []
    durations: list[float] = []
    for i in range(n // 2):
        body = chat("the cached question") if i == 0 else chat(f"{label} question {i}")
        response, seconds = await timed(client, body)
        assert response.status_code == 200, response.text
        labels.append(response.headers["x-tiergate-cache"])
        durations.append(seconds)
    burst = [
        timed(client, chat(f"{label} burst {i}", stream=i % 2 == 0)) for i in range(n - n // 2)
    ]
    for response, seconds in await asyncio.gather(*burst):
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]")
        labels.append(response.headers["x-tiergate-cache"])
        durations.append(seconds)
    slowest = max(durations)
    assert slowest < REQUEST_BOUND_S, f"a request took {slowest:.3f} s with Redis {label}"
    return labels


async def wait_ready_again(client: httpx.AsyncClient) -> None:
    """Keep serving (a request lets the breaker probe Redis) until /readyz is ready."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        response, seconds = await timed(client, chat("while recovering"))
        assert response.status_code == 200
        assert seconds < REQUEST_BOUND_S
        body = await ready(client)
        if body["status"] == "ready":
            assert body["cache"]["state"] == "ok"
            return
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz not ready {RECOVERY_S} s after Redis came back: {body}")
        await asyncio.sleep(0.1)


async def prime(client: httpx.AsyncClient, app: FastAPI, body: dict[str, Any]) -> list[str]:
    """Send ``body`` twice, the cache's writes done in between; the two cache labels."""
    labels = []
    for _ in range(2):
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200, response.text
        labels.append(response.headers["x-tiergate-cache"])
        await app.state.cache.flush()
    return labels


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_redis_stopped_mid_test(
    tmp_path: Path, private_redis: PrivateRedis, sig: signal.Signals
) -> None:
    """Redis stopped while the gateway serves: requests go on uncached within the bound,
    /readyz is degraded naming the error; restarted, caching and readiness come back."""
    async with app_on(tmp_path, private_redis.url()) as (client, app):
        assert await prime(client, app, chat("the cached question")) == ["miss", "hit"]
        assert (await ready(client))["status"] == "ready"

        private_redis.stop(sig)
        labels = await outage_requests(client, "stopped")
        assert "hit" not in labels  # the cached answer is out of reach: the backend answers
        body = await ready(client)
        assert body["status"] == "degraded"
        assert body["cache"]["state"] == "degraded"
        assert "redis unavailable" in body["cache"]["detail"]
        assert "ConnectionError" in body["cache"]["detail"]
        assert all(b["usable"] for b in body["backends"].values())

        private_redis.start()
        await wait_ready_again(client)
        # Nothing was persisted: the old answer is gone, and new ones are cached again. (The
        # first may say prefix:N rather than miss: /readyz's PING brings Redis back before the
        # governance gate is, and the requests sent meanwhile warmed the shared system prompt.)
        first, second = await prime(client, app, chat("a question after the restart"))
        assert first != "hit"
        assert second == "hit"


async def test_redis_frozen_mid_test(tmp_path: Path, private_redis: PrivateRedis) -> None:
    """Redis frozen (SIGSTOP: connections still open, nothing answers): every request still
    succeeds within the bound, /readyz is degraded with the timeout as its reason, and once
    the breaker opened no more connections are tried. Thawed, the cached answer is served
    again."""
    async with (
        TcpProxy("127.0.0.1", private_redis.port) as proxy,
        app_on(tmp_path, f"redis://127.0.0.1:{proxy.port}/0") as (client, app),
    ):
        assert await prime(client, app, chat("the cached question")) == ["miss", "hit"]
        connections_before = proxy.accepted

        private_redis.freeze()
        labels = await outage_requests(client, "frozen")
        assert "hit" not in labels
        assert proxy.accepted > connections_before  # timed-out calls did try Redis
        body = await ready(client)
        assert body["status"] == "degraded"
        assert "redis unavailable" in body["cache"]["detail"]
        assert "Timeout" in body["cache"]["detail"]

        # The breaker is open: requests skip Redis altogether (no new connection is made).
        skipped_from = proxy.accepted
        for i in range(5):
            response, seconds = await timed(client, chat(f"skipped {i}"))
            assert response.status_code == 200
            assert seconds < REQUEST_BOUND_S
        assert proxy.accepted == skipped_from
        await app.state.cache.flush()
        assert proxy.accepted == skipped_from  # nor do the cache writes

        private_redis.thaw()
        await wait_ready_again(client)
        hit = await client.post(CHAT, json=chat("the cached question"))
        assert hit.headers["x-tiergate-cache"] == "hit"  # still in Redis, reachable again


# --- the store alone, with a short breaker cooldown ----------------------------------------------


async def test_store_calls_are_bounded_and_the_breaker_recovers(
    private_redis: PrivateRedis,
) -> None:
    """Frozen Redis: each call answers "nothing" within twice the timeout; after three
    failures the breaker answers at once without connecting; after its cooldown one probe
    finds Redis back and the store is ok again."""
    async with TcpProxy("127.0.0.1", private_redis.port) as proxy:
        store = RedisStore(
            f"redis://127.0.0.1:{proxy.port}/0", timeout_s=0.05, breaker=Breaker(3, 0.3)
        )
        try:
            await store.set("r:k", b"kept", ttl_s=60)
            await store.stamp(["p:1"], "a", ttl_s=60)
            private_redis.freeze()
            for _ in range(3):
                started = time.perf_counter()
                assert await store.get("r:k") is None
                # Twice the timeout, plus room for a loaded machine; frozen, it would hang.
                assert time.perf_counter() - started < 0.1 + 0.9
            assert store.state()[0] == "degraded"
            connections = proxy.accepted
            assert await store.stamps(["p:1"]) == [{}]
            await store.set("r:other", b"x", ttl_s=60)
            await store.stamp(["p:1"], "b", ttl_s=60)
            assert proxy.accepted == connections
            private_redis.thaw()
            deadline = time.monotonic() + 10
            while (value := await store.get("r:k")) is None:
                assert time.monotonic() < deadline, "the store never came back"
                await asyncio.sleep(0.05)
            assert value == b"kept"
            assert store.state() == ("ok", "redis")
            assert [set(m) for m in await store.stamps(["p:1"])] == [{"a"}]
        finally:
            await store.aclose()

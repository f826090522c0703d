"""The stores behind the caches: Redis (on this machine's Redis, its test index) and the
in-process store answer the same way — values, expiry, prefix stamps — Redis keeps each store's
keys under its namespace, and nothing is left behind without an expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.cache.service import CacheService
from gateway.cache.store import MemoryStore, RedisStore, Store
from gateway.metrics import Metrics

WAIT_S = 10.0


async def until(condition: Callable[[], object], what: str, within_s: float = WAIT_S) -> None:
    """Poll ``condition`` (sync or async) until it is true; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each test once on the in-process store and once on Redis (its own namespace)."""
    if request.param == "memory":
        made: Store = MemoryStore()
    else:
        url: str = request.getfixturevalue("redis_url")
        made = RedisStore(url, namespace=f"test-{uuid.uuid4().hex[:8]}:", timeout_s=1.0)
    yield made
    await made.aclose()


class TestBothStores:
    async def test_set_then_get(self, store: Store) -> None:
        """A value set is read back byte for byte; another key is absent; a set replaces."""
        value = bytes(range(256)) * 4
        assert await store.get("r:one") is None
        await store.set("r:one", value, ttl_s=60)
        assert await store.get("r:one") == value
        assert await store.get("r:two") is None
        await store.set("r:one", b"replaced", ttl_s=60)
        assert await store.get("r:one") == b"replaced"
        assert store.state()[0] == "ok"

    async def test_values_expire(self, store: Store) -> None:
        """A value with a short TTL disappears; one with a long TTL stays."""
        await store.set("r:short", b"v", ttl_s=0.2)
        await store.set("r:long", b"w", ttl_s=60)
        assert await store.get("r:short") == b"v"
        await until(lambda: _absent(store, "r:short"), "the short-lived value to expire")
        assert await store.get("r:long") == b"w"

    async def test_stamps_record_who_served_each_prefix(self, store: Store) -> None:
        """``stamp`` sets a member's time on each key; ``stamps`` reads every key's members in
        order (absent keys empty); a second member joins the first."""
        before = time.time()
        await store.stamp(["p:1", "p:2"], "a", ttl_s=60)
        await store.stamp(["p:2"], "b", ttl_s=60)
        after = time.time()
        first, second, absent = await store.stamps(["p:1", "p:2", "p:unknown"])
        assert set(first) == {"a"}
        assert set(second) == {"a", "b"}
        assert absent == {}
        for stamped in (first["a"], second["a"], second["b"]):
            assert before - 0.01 <= stamped <= after + 0.01
        assert await store.stamps([]) == []
        await store.stamp([], "a", ttl_s=60)  # nothing to do, no error

    async def test_a_new_stamp_moves_the_time_on(self, store: Store) -> None:
        """Stamping again updates the member's time."""
        await store.stamp(["p:x"], "a", ttl_s=60)
        (old,) = await store.stamps(["p:x"])
        await until(lambda: time.time() > old["a"] + 0.01, "the clock to move")
        await store.stamp(["p:x"], "a", ttl_s=60)
        (new,) = await store.stamps(["p:x"])
        assert new["a"] > old["a"]

    async def test_stamps_expire(self, store: Store) -> None:
        """A prefix not stamped again within its TTL is forgotten."""
        await store.stamp(["p:short"], "a", ttl_s=0.2)
        await store.stamp(["p:long"], "a", ttl_s=60)
        await until(
            lambda: _stamps_empty(store, "p:short"), "the short-lived prefix to be forgotten"
        )
        (kept,) = await store.stamps(["p:long"])
        assert set(kept) == {"a"}


async def _absent(store: Store, key: str) -> bool:
    return await store.get(key) is None


async def _stamps_empty(store: Store, key: str) -> bool:
    return await store.stamps([key]) == [{}]


class TestRedisStore:
    async def test_namespaces_keep_stores_apart(self, redis_url: str) -> None:
        """Two stores on one Redis with different namespaces see neither the other's values
        nor its stamps; the same namespace sees them (two gateway replicas)."""
        one = RedisStore(redis_url, namespace="one:")
        two = RedisStore(redis_url, namespace="two:")
        also_one = RedisStore(redis_url, namespace="one:")
        try:
            await one.set("r:k", b"from one", ttl_s=60)
            await one.stamp(["p:k"], "a", ttl_s=60)
            assert await two.get("r:k") is None
            assert await two.stamps(["p:k"]) == [{}]
            assert await also_one.get("r:k") == b"from one"
            assert [set(m) for m in await also_one.stamps(["p:k"])] == [{"a"}]
        finally:
            for store in (one, two, also_one):
                await store.aclose()

    async def test_every_key_has_an_expiry_and_goes(self, redis_url: str) -> None:
        """What the store writes lives under its namespace with a TTL (nothing is kept for
        ever), and once the TTLs pass the database is empty again."""
        store = RedisStore(redis_url, namespace="ns:")
        raw = aioredis.Redis.from_url(redis_url)
        try:
            await store.set("r:a", b"1", ttl_s=0.3)
            await store.stamp(["p:a", "p:b"], "replica", ttl_s=0.3)
            keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await raw.keys("*"))
            assert keys == ["ns:p:a", "ns:p:b", "ns:r:a"]
            for key in keys:
                ttl_ms = await raw.pttl(key)
                assert 0 < ttl_ms <= 300
            await until(lambda: _dbsize_zero(raw), "the keys to expire")
        finally:
            await store.aclose()
            await raw.aclose()

    async def test_a_healthy_redis_is_ok(self, redis_url: str) -> None:
        """``state()`` reports ok while Redis answers."""
        store = RedisStore(redis_url)
        try:
            await store.set("r:x", b"1", ttl_s=5)
            assert await store.get("r:x") == b"1"
            assert store.state() == ("ok", "redis")
        finally:
            await store.aclose()

    async def test_a_burst_beyond_the_pool_is_not_a_redis_failure(self, redis_url: str) -> None:
        """More calls at once than the store has connections: the extra calls go uncached,
        but Redis is not marked unavailable (no breaker failure, no warning) and every call
        that got a connection reads the value."""
        store = RedisStore(redis_url, timeout_s=2.0)
        try:
            await store.set("r:k", b"v", ttl_s=60)
            with capture_logs() as logs:
                results = await asyncio.gather(*(store.get("r:k") for _ in range(600)))
            assert [e for e in logs if e["event"] == "cache_store_unavailable"] == []
            assert set(results) == {b"v", None}
            assert store.state() == ("ok", "redis")
            assert await store.get("r:k") == b"v"
        finally:
            await store.aclose()


async def _dbsize_zero(raw: aioredis.Redis) -> bool:
    return int(await raw.dbsize()) == 0


class TestMemoryStore:
    async def test_expiry_follows_the_clock(self) -> None:
        """Values and stamps live exactly their TTL on the store's clock."""
        clock = Clock()
        store = MemoryStore(clock=clock)
        await store.set("r:k", b"v", ttl_s=10)
        await store.stamp(["p:k"], "a", ttl_s=10)
        clock.now += 10
        assert await store.get("r:k") == b"v"
        assert await store.stamps(["p:k"]) == [{"a": clock.now - 10}]
        clock.now += 0.001
        assert await store.get("r:k") is None
        assert await store.stamps(["p:k"]) == [{}]

    async def test_bounded_least_recently_used_go_first(self) -> None:
        """Past ``max_entries`` the least recently used value is dropped (a read counts as a
        use); prefixes are bounded the same way."""
        store = MemoryStore(max_entries=3)
        for name in ("a", "b", "c"):
            await store.set(name, name.encode(), ttl_s=60)
        assert await store.get("a") == b"a"  # now b is the least recently used
        await store.set("d", b"d", ttl_s=60)
        assert [await store.get(k) for k in ("a", "b", "c", "d")] == [b"a", None, b"c", b"d"]
        await store.stamp(["p1", "p2", "p3", "p4"], "x", ttl_s=60)
        assert [bool(m) for m in await store.stamps(["p1", "p2", "p3", "p4"])] == [
            False,
            True,
            True,
            True,
        ]

    async def test_state_and_close(self) -> None:
        """The in-process store is always ok and says how much it holds; closing empties it."""
        store = MemoryStore()
        await store.set("r:k", b"v", ttl_s=60)
        await store.stamp(["p:1", "p:2"], "a", ttl_s=60)
        state, detail = store.state()
        assert state == "ok"
        assert "1 responses" in detail
        assert "2 prefixes" in detail
        await store.aclose()
        assert await store.get("r:k") is None


class TestCacheService:
    async def test_a_foreign_or_corrupt_entry_is_a_miss(self, store: Store) -> None:
        """A value under a response key that is not a cached answer is a miss (counted as
        one), not an error."""
        metrics = Metrics()
        service = CacheService(store, metrics)
        for i, junk in enumerate((b"not json", b'{"text": "x"}', b"[1, 2]", b'{"usage": 5}')):
            await store.set(f"r:junk{i}", junk, ttl_s=60)
            assert await service.lookup(f"r:junk{i}") is None
        misses = metrics.registry.get_sample_value(
            "tiergate_cache_lookups_total", {"result": "miss"}
        )
        assert misses == 4

    async def test_writes_finish_on_flush(self, store: Store) -> None:
        """Prefix stamps are written in the background; ``flush`` waits for them."""
        service = CacheService(store)
        service.served(["p:1", "p:2"], "a", ttl_s=60)
        await service.flush()
        assert [set(m) for m in await store.stamps(["p:1", "p:2"])] == [{"a"}, {"a"}]

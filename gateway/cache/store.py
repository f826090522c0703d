"""Where the caches keep their entries: Redis (shared by every gateway replica) or, with no
``TIERGATE_REDIS_URL``, an in-process store with the same interface.

A cache is an optimisation, so a slow, frozen or dead Redis must never fail or stall a request:
every operation is bounded by a short timeout (tens of milliseconds), failures feed a breaker
that skips Redis altogether for a while, and a failed operation answers "nothing cached" (reads)
or does nothing (writes). ``state()`` tells ``/readyz`` whether the store is degraded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

import structlog

from gateway.routing.breaker import Breaker

log = structlog.get_logger("tiergate.cache")

T = TypeVar("T")
State = Literal["ok", "degraded"]


class Store(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def stamp(self, keys: Sequence[str], member: str, ttl_s: float) -> None:
        """For each key (a hash map), set ``member`` to now and keep the key ``ttl_s`` more."""
        ...

    async def stamps(self, keys: Sequence[str]) -> list[dict[str, float]]:
        """Each key's map of member → time it was stamped (empty when absent)."""
        ...

    def state(self) -> tuple[State, str]: ...

    async def check(self) -> tuple[State, str]:
        """``state`` after asking the store now (readiness: a Redis that went away is reported
        before a request finds out)."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """The in-process store: bounded (least recently used entries go first), expiring."""

    kind = "memory"

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._maps: OrderedDict[str, tuple[float, dict[str, float]]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            del self._values[key]
            return None
        self._values.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._values[key] = (self._clock() + ttl_s, value)
        self._values.move_to_end(key)
        while len(self._values) > self._max:
            self._values.popitem(last=False)

    async def stamp(self, keys: Sequence[str], member: str, ttl_s: float) -> None:
        now = self._clock()
        for key in keys:
            _, members = self._maps.get(key, (0.0, {}))
            members[member] = now
            self._maps[key] = (now + ttl_s, members)
            self._maps.move_to_end(key)
        while len(self._maps) > self._max:
            self._maps.popitem(last=False)

    async def stamps(self, keys: Sequence[str]) -> list[dict[str, float]]:
        now = self._clock()
        out: list[dict[str, float]] = []
        for key in keys:
            item = self._maps.get(key)
            out.append(dict(item[1]) if item is not None and item[0] >= now else {})
        return out

    def state(self) -> tuple[State, str]:
        return "ok", f"in-process ({len(self._values)} responses, {len(self._maps)} prefixes)"

    async def check(self) -> tuple[State, str]:
        return self.state()

    async def aclose(self) -> None:
        self._values.clear()
        self._maps.clear()


class RedisStore:
    """Redis through redis-py's asyncio client, every call bounded and behind a breaker."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.05,
        namespace: str = "tiergate:",
        breaker: Breaker | None = None,
    ) -> None:
        import redis.asyncio as redis
        from redis.exceptions import MaxConnectionsError

        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=256,
        )
        self._timeout = timeout_s
        self._ns = namespace
        self._breaker = breaker or Breaker(failures=3, cooldown_s=5.0)
        self._last_error = ""
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError, TimeoutError)
        self._busy: type[Exception] = MaxConnectionsError

    async def _call(self, what: str, op: Callable[[], Awaitable[T]], default: T) -> T:
        if not self._breaker.allow():
            return default
        try:
            async with asyncio.timeout(self._timeout * 2):
                result = await op()
        except self._busy:
            # Every pooled connection is in use (a burst): Redis is fine, so this is no failure
            # for the breaker; this one call just goes uncached.
            self._breaker.release()
            return default
        except self._errors as exc:
            self._failed(what, exc)
            return default
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        self._breaker.record_success()
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        opened_before = self._breaker.state() != "closed"
        self._breaker.record_failure()
        self._last_error = f"{what}: {type(exc).__name__}: {exc}"[:300]
        if not opened_before and self._breaker.state() != "closed":
            log.warning(
                "cache_store_unavailable",
                error=self._last_error,
                detail="requests go on uncached until Redis answers again",
            )

    async def get(self, key: str) -> bytes | None:
        async def run() -> bytes | None:
            value = await self._redis.get(self._ns + key)
            return value if isinstance(value, bytes) or value is None else value.encode()

        return await self._call("get", run, None)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(
            "set", lambda: self._redis.set(self._ns + key, value, px=int(ttl_s * 1000)), None
        )

    async def stamp(self, keys: Sequence[str], member: str, ttl_s: float) -> None:
        if not keys:
            return
        now = time.time()

        async def run() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hset(self._ns + key, member, now)
                pipe.pexpire(self._ns + key, int(ttl_s * 1000))
            await pipe.execute()

        await self._call("stamp", run, None)

    async def stamps(self, keys: Sequence[str]) -> list[dict[str, float]]:
        if not keys:
            return []

        async def run() -> list[dict[str, float]]:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._ns + key)
            raw: list[Mapping[Any, Any]] = await pipe.execute()
            return [{_text(k): float(v) for k, v in item.items()} for item in raw]

        empty: list[dict[str, float]] = [{} for _ in keys]
        return await self._call("stamps", run, empty)

    def state(self) -> tuple[State, str]:
        breaker = self._breaker.state()
        if breaker == "closed":
            return "ok", "redis"
        return "degraded", f"redis unavailable ({self._last_error}); serving uncached"

    async def check(self) -> tuple[State, str]:
        """A PING, bounded and through the breaker as every call is: a failure counts toward
        opening it, and while it is half-open the PING is the trial that closes it again (a
        Redis back after an outage is used, and reported, without waiting for a request)."""
        if not self._breaker.allow():
            return self.state()
        try:
            async with asyncio.timeout(self._timeout * 2):
                await self._redis.ping()
        except self._busy:  # every pooled connection in use: Redis answers
            self._breaker.release()
            return "ok", "redis (every connection in use)"
        except self._errors as exc:
            self._failed("ping", exc)
            return "degraded", f"redis unavailable ({self._last_error}); serving uncached"
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        self._breaker.record_success()
        return "ok", "redis"

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self._redis.aclose()
        except Exception as exc:  # closing a dead connection must not stop the shutdown
            log.debug("cache_store_close_failed", error=str(exc))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

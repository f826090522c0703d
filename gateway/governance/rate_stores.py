"""Where the rate-limit counters live: Redis (every replica's) or this process (``limits``).

Both keep sliding-window counters (``windows``) and both answer an admission in one step, all or
nothing: every limit of the request is checked and the costs are added only when all fit.

* ``RedisWindows``: one Lua script, so one round trip, however many limits a request has
  (``limits``' own Redis storage runs a script per limit and per question: test, hit and window
  stats for 2 subjects × 2 limits are 12 round trips, 3–6 ms p50 here; see
  bench/rate_limits.py). The counters are named ``<prefix><kind>:<id>:<r|t>:<window number>``,
  the window number from the caller's clock, so replicas agree as far as their clocks do.
* ``LocalWindows``: ``limits``' ``MemoryStorage`` with its ``SlidingWindowCounterRateLimiter``,
  for a gateway without Redis and while Redis is away. It reads the counters, decides, then hits
  each limit; the hits are checked again by ``limits``, so a race inside the event loop can
  refuse a request after an earlier limit of it was hit (over-counting, never under).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gateway.governance.windows import Check, Counts, fits

# KEYS: each limit's previous and current window. ARGV[1], one string (fewer arguments to
# encode): the previous window's share, the TTL in ms, then each limit's cost and limit. The
# answer, one string too: "1|0 prev cur prev cur ...", the counts after the costs if admitted.
_ADMIT = """
local argv = {}
for word in string.gmatch(ARGV[1], '%S+') do argv[#argv + 1] = tonumber(word) end
local share, ttl, n = argv[1], argv[2], #KEYS / 2
local values = redis.call('MGET', unpack(KEYS))
local out = {1}
for i = 1, n do
  local prev = tonumber(values[2 * i - 1]) or 0
  local cur = tonumber(values[2 * i]) or 0
  if math.floor(prev * share) + cur + argv[1 + 2 * i] > argv[2 + 2 * i] then out[1] = 0 end
  out[2 * i], out[2 * i + 1] = prev, cur
end
if out[1] == 1 then
  for i = 1, n do
    local cost = argv[1 + 2 * i]
    if cost > 0 then
      local now = redis.call('INCRBY', KEYS[2 * i], cost)
      if now == cost then redis.call('PEXPIRE', KEYS[2 * i], ttl) end
      out[2 * i + 1] = now
    end
  end
end
return table.concat(out, ' ')
"""

# KEYS: current windows; ARGV: the TTL in ms, then each key's delta.
_ADJUST = """
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local delta = tonumber(ARGV[1 + i])
  if delta > 0 then
    if redis.call('INCRBY', KEYS[i], delta) == delta then redis.call('PEXPIRE', KEYS[i], ttl) end
  elseif delta < 0 then
    local value = tonumber(redis.call('GET', KEYS[i]))
    if value then
      redis.call('SET', KEYS[i], math.max(0, value + delta), 'KEEPTTL')
    end
  end
end
return 1
"""


class WindowStore(Protocol):
    kind: str

    async def admit(self, checks: Sequence[Check], window_s: float) -> tuple[bool, list[Counts]]:
        """Add every check's cost if all fit; the counters as seen (after the costs if added)."""
        ...

    async def adjust(self, changes: Sequence[tuple[Check, int]], window_s: float) -> None:
        """Add each delta (negative: take back, not below 0) to a limit's current window."""
        ...

    async def aclose(self) -> None: ...


class RedisWindows:
    """The counters in Redis, each admission one script call, each call bounded."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout_s: float,
        connect_timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        import redis.asyncio as redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # a failure is handled by going local, not retried
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=256,
        )
        self._prefix = prefix
        self._clock = clock
        self._admit = self._redis.register_script(_ADMIT)
        self._adjust = self._redis.register_script(_ADJUST)
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)

    def _window(self, window_s: float) -> tuple[int, float]:
        now = self._clock()
        number = int(now // window_s)
        return number, now - number * window_s

    async def admit(self, checks: Sequence[Check], window_s: float) -> tuple[bool, list[Counts]]:
        number, elapsed = self._window(window_s)
        keys: list[str] = []
        words = [repr(max(0.0, 1.0 - elapsed / window_s)), str(int(window_s * 2000) + 1000)]
        for check in checks:
            base = self._prefix + check.key
            keys += (f"{base}:{number - 1}", f"{base}:{number}")
            words += (str(check.cost), str(check.limit))
        # bounded by the client's socket timeouts (no asyncio.timeout: a timer per call)
        raw = (await self._admit(keys=keys, args=[" ".join(words)])).split()
        counts = [
            Counts(int(raw[2 * i + 1]), int(raw[2 * i + 2]), elapsed) for i in range(len(checks))
        ]
        return raw[0] == b"1", counts

    async def adjust(self, changes: Sequence[tuple[Check, int]], window_s: float) -> None:
        if not changes:
            return
        number, _ = self._window(window_s)
        keys = [f"{self._prefix}{check.key}:{number}" for check, _ in changes]
        args: list[Any] = [int(window_s * 2000) + 1000, *(delta for _, delta in changes)]
        await self._adjust(keys=keys, args=args)

    async def aclose(self) -> None:
        await self._redis.aclose()


class LocalWindows:
    """The counters in this process, through ``limits`` (its own clock: ``time.time``)."""

    kind = "memory"

    def __init__(self, prefix: str) -> None:
        self._storage = MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._prefix = prefix
        self._items: dict[tuple[int, int], RateLimitItem] = {}

    def _item(self, limit: int, window_s: float) -> RateLimitItem:
        seconds = max(1, round(window_s))
        item = self._items.get((limit, seconds))
        if item is None:
            item = self._items[(limit, seconds)] = RateLimitItemPerSecond(limit, seconds)
        return item

    async def _counts(self, item: RateLimitItem, key: str) -> Counts:
        expiry = item.get_expiry()
        prev, _, cur, cur_ttl = await self._storage.get_sliding_window(key, expiry)
        return Counts(prev, cur, max(0.0, 2 * expiry - cur_ttl))

    async def admit(self, checks: Sequence[Check], window_s: float) -> tuple[bool, list[Counts]]:
        items = [self._item(check.limit, window_s) for check in checks]
        names = [self._prefix + check.key for check in checks]
        counts = [
            await self._counts(item, item.key_for(name))
            for item, name in zip(items, names, strict=True)
        ]
        if not all(fits(c, n, window_s) for c, n in zip(checks, counts, strict=True)):
            return False, counts
        for check, item, name in zip(checks, items, names, strict=True):
            if check.cost > 0 and not await self._limiter.hit(item, name, cost=check.cost):
                return False, counts
        return True, [
            Counts(count.prev, count.cur + check.cost, count.elapsed_s)
            for check, count in zip(checks, counts, strict=True)
        ]

    async def adjust(self, changes: Sequence[tuple[Check, int]], window_s: float) -> None:
        for check, delta in changes:
            item = self._item(check.limit, window_s)
            expiry = item.get_expiry()
            name = item.key_for(self._prefix + check.key)
            _, current = self._storage.sliding_window_keys(name, expiry, time.time())
            if delta > 0:
                await self._storage.incr(current, 2 * expiry, delta)
            elif delta < 0:
                await self._storage.decr(current, -delta)

    async def aclose(self) -> None:
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
        await self._storage.reset()

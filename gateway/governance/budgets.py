"""Budget holds: what a key or team has spent this period and what requests in flight have
reserved, in Redis (shared by every replica) or in this process.

Money is counted in integer nano-dollars (a token of a cheap model costs ~1e-8 USD). A request
*reserves* its worst case before dispatch, atomically against every budget it draws on: the
first of its options (the chosen tier's worst case, then cheaper tiers') that fits all of them
is taken, in one round trip, so concurrent requests never reserve past a budget. When it ends,
``settle`` drops the reservation and adds the real cost. A reservation carries an expiry (the
request's deadline plus a margin), so one left by a killed process frees itself.

A hold's spend is seeded from the ledger the first time a period is seen (``seed``); from then
on the store's counter is the truth for that period, and the ledger's rows follow it.

The gateway with Redis reserves through ``remote.RemoteGate`` (with the rate limits, in one
call; the same ``spent`` counter, its reservations kept its own way) and keeps ``MemoryBudgets``
for while Redis is away. ``RedisBudgets`` is the store on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.governance.grants import Allowance, period_end, period_start
from gateway.governance.outage import Outage

NANO = Decimal(1_000_000_000)
UNSEEDED = -2
NONE_FITS = -1
RETRY_REDIS_S = 5.0


def to_nano(usd: Decimal, *, up: bool = False) -> int:
    rounding = ROUND_CEILING if up else ROUND_HALF_UP
    return int((usd * NANO).to_integral_value(rounding=rounding))


def from_nano(value: int) -> Decimal:
    return Decimal(value) / NANO


@dataclass(frozen=True, slots=True)
class Hold:
    """One budget a request draws on, in its current period."""

    allowance: Allowance
    limit: int  # nano-USD
    start: datetime
    resets: datetime | None
    name: str  # the store's key for this hold (ids only: never a secret)

    @classmethod
    def of(cls, allowance: Allowance, now: datetime) -> Hold:
        assert allowance.budget_usd is not None
        start = period_start(allowance.period, now)
        return cls(
            allowance,
            to_nano(allowance.budget_usd),
            start,
            period_end(allowance.period, now),
            f"{allowance.kind}:{allowance.id}:{int(start.timestamp())}",
        )

    def ttl_s(self, now: datetime) -> int:
        if self.resets is None:
            return 400 * 86400
        return int((self.resets - now).total_seconds()) + 86400


@dataclass(frozen=True, slots=True)
class Reserved:
    index: int  # the option taken; NONE_FITS; or UNSEEDED (``left[0]`` is then the hold's index)
    left: tuple[int, ...]  # per hold: limit - spent - reserved, before this reservation


@dataclass(frozen=True, slots=True)
class Settled:
    """A request that ended: its holds, its reservation's id and what it really cost."""

    holds: tuple[Hold, ...]
    rid: str
    actual: int  # nano-USD
    held: int = 0  # nano-USD: what its holds reserved (how ``RemoteGate`` finds them)


class BudgetStore(Protocol):
    async def reserve(
        self, holds: Sequence[Hold], options: Sequence[int], rid: str, expires: float
    ) -> Reserved: ...

    async def seed(self, hold: Hold, spent: int, now: datetime) -> None: ...

    async def settle(self, holds: Sequence[Hold], rid: str, actual: int) -> None: ...

    async def settle_many(self, items: Sequence[Settled]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class _Book:
    spent: int
    held: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid → (amount, expiry)


class MemoryBudgets:
    """This process only (no Redis, or Redis down)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._books: dict[str, _Book] = {}
        self._clock = clock

    async def reserve(
        self, holds: Sequence[Hold], options: Sequence[int], rid: str, expires: float
    ) -> Reserved:
        now = self._clock()
        left: list[int] = []
        for i, hold in enumerate(holds):
            book = self._books.get(hold.name)
            if book is None:
                return Reserved(UNSEEDED, (i,))
            book.held = {r: v for r, v in book.held.items() if v[1] > now}
            left.append(hold.limit - book.spent - sum(v[0] for v in book.held.values()))
        for index, amount in enumerate(options):
            if amount <= 0 or all(amount <= room for room in left):
                if amount > 0:
                    for hold in holds:
                        self._books[hold.name].held[rid] = (amount, expires)
                return Reserved(index, tuple(left))
        return Reserved(NONE_FITS, tuple(left))

    async def seed(self, hold: Hold, spent: int, now: datetime) -> None:
        self._books.setdefault(hold.name, _Book(spent))

    async def settle(self, holds: Sequence[Hold], rid: str, actual: int) -> None:
        for hold in holds:
            book = self._books.get(hold.name)
            if book is not None:
                book.held.pop(rid, None)
                book.spent += actual

    async def settle_many(self, items: Sequence[Settled]) -> None:
        for item in items:
            await self.settle(item.holds, item.rid, item.actual)

    async def aclose(self) -> None:
        return None


# KEYS: per hold, its spent counter, reservation expiries (zset) and amounts (hash).
# ARGV: now, expiry, rid, number of options, the options, then each hold's limit.
_RESERVE = """
local now, expires, rid, nopt = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local nh = #KEYS / 3
local left = {}
for i = 1, nh do
  local s, z, a = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local spent = redis.call('GET', s)
  if not spent then return {-2, i - 1} end
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #old > 0 then
    redis.call('HDEL', a, unpack(old))
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  local held = 0
  for _, v in ipairs(redis.call('HVALS', a)) do held = held + tonumber(v) end
  left[i] = tonumber(ARGV[4 + nopt + i]) - tonumber(spent) - held
end
for k = 1, nopt do
  local amount = tonumber(ARGV[4 + k])
  local fits = true
  if amount > 0 then
    for i = 1, nh do if amount > left[i] then fits = false break end end
  end
  if fits then
    if amount > 0 then
      for i = 1, nh do
        redis.call('ZADD', KEYS[3*i-1], expires, rid)
        redis.call('HSET', KEYS[3*i], rid, amount)
        redis.call('EXPIRE', KEYS[3*i-1], 86400)
        redis.call('EXPIRE', KEYS[3*i], 86400)
      end
    end
    local out = {k - 1}
    for i = 1, nh do out[#out + 1] = left[i] end
    return out
  end
end
local out = {-1}
for i = 1, nh do out[#out + 1] = left[i] end
return out
"""

# Many requests at once. KEYS: each request's holds (three keys each, as above), in order;
# ARGV: per request, its reservation id, real cost and number of holds.
_SETTLE = """
local k = 0
for a = 1, #ARGV, 3 do
  local rid, actual, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  for i = 1, n do
    local s, z, h = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    redis.call('ZREM', z, rid)
    redis.call('HDEL', h, rid)
    if redis.call('EXISTS', s) == 1 then redis.call('INCRBY', s, actual) end
    k = k + 3
  end
end
return 1
"""


class RedisBudgets:
    """Shared by every replica on one Redis. When Redis cannot be reached, this process carries
    on with its own counters (seeded from the ledger again) and says so once; it tries Redis
    again every few seconds."""

    def __init__(
        self, url: str, *, timeout_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=max(2.0, timeout_s)
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._local = MemoryBudgets(clock)
        self._clock = clock
        self._outage = Outage(rates=False, budgets=True, retry_s=RETRY_REDIS_S, clock=clock)

    @staticmethod
    def _keys(holds: Sequence[Hold]) -> list[str]:
        keys: list[str] = []
        for hold in holds:
            base = f"tiergate:budget:{hold.name}"
            keys += [f"{base}:spent", f"{base}:held", f"{base}:amount"]
        return keys

    async def reserve(
        self, holds: Sequence[Hold], options: Sequence[int], rid: str, expires: float
    ) -> Reserved:
        if self._outage.usable():
            args: list[str | int | float] = [self._clock(), expires, rid, len(options)]
            args += [*options, *(h.limit for h in holds)]
            try:
                reply = await self._reserve(keys=self._keys(holds), args=args)
            except RedisError as exc:
                self._outage.went_away(exc)
            else:
                self._outage.back()
                values = [int(v) for v in reply]
                return Reserved(values[0], tuple(values[1:]))
        return await self._local.reserve(holds, options, rid, expires)

    async def seed(self, hold: Hold, spent: int, now: datetime) -> None:
        if self._outage.usable():
            key = self._keys([hold])[0]
            try:
                await self._redis.set(key, spent, nx=True, ex=hold.ttl_s(now))
                return
            except RedisError as exc:
                self._outage.went_away(exc)
        await self._local.seed(hold, spent, now)

    async def settle(self, holds: Sequence[Hold], rid: str, actual: int) -> None:
        await self.settle_many([Settled(tuple(holds), rid, actual)])

    async def settle_many(self, items: Sequence[Settled]) -> None:
        await self._local.settle_many(items)
        if not items or not self._outage.usable():
            return
        keys: list[str] = []
        args: list[str | int] = []
        for item in items:
            keys += self._keys(item.holds)
            args += [item.rid, item.actual, len(item.holds)]
        try:
            await self._settle(keys=keys, args=args)
        except RedisError as exc:
            self._outage.went_away(exc)

    async def aclose(self) -> None:
        await self._redis.aclose()

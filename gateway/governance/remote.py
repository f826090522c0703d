"""The governance gate's Redis side: rate limits and budget holds together, every request that
asked in the same event-loop turn in one script call, with the settlements of the requests that
ended since riding along.

One call per turn, not one per store per request: a request's rate limits (``rates``: sliding
windows, requests and tokens per minute, of its key and team) and its budget hold (``budgets``:
the first of its options that fits every budget it draws on) are decided together in Redis, all
or nothing — a request refused by its budget takes nothing from its rate limits and the other
way round. The script handles the batch's requests one after the other, so concurrent requests
never reserve past a budget or a limit, whichever replica they came through. Each request gets
its own answer: whether its limits fitted (and the windows' counts, for the headers), the option
its budget took (or none, or "unseeded": the period's spend must be read from the ledger first,
``seed``) and what was left of each budget.

A request that ended is settled (its hold replaced by its real cost, its token estimate
corrected) on the next call that goes out anyway; when none does within ``settle_every_s``, a
call of settlements alone does. A hold thus outlives its request by at most that long, which
only errs on the safe side.

When Redis fails (refused, reset, timed out, an error reply), every request of the failed call
raises ``Unavailable`` and the caller admits it in its own process; ``rate_limits_local`` and
``budgets_local`` are logged once for the outage, Redis is tried again every ``retry_s`` on the
request path, and ``rate_limits_shared`` / ``budgets_shared_again`` are logged when it answers.
Settlements of a failed call are lost for Redis: their holds free themselves when they expire.

Redis keys name ids only (key and team ids, never a key): the rate windows
``tiergate:rl:<kind>:<id>:<r|t>:<window number>`` (as ``rate_stores.RedisWindows``), the budget
holds ``tiergate:budget:<kind>:<id>:<period start>:<spent|holds|holds:sum>``; the ``spent``
counter is the one ``budgets.RedisBudgets`` keeps too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.governance.budgets import UNSEEDED, Hold, Reserved, Settled
from gateway.governance.gate_script import GATE
from gateway.governance.rates import PREFIX  # the rate windows' names, as the other stores'
from gateway.governance.resp import UNAVAILABLE, Connection, ReplyError
from gateway.governance.windows import Check, Counts

log = structlog.get_logger("tiergate.governance")

BUDGET_PREFIX = "tiergate:budget:"
SWEEP_EVERY_S = 1.0  # how often the holds of requests that never ended are looked for


class Unavailable(Exception):
    """Redis did not answer this call: the caller admits the request in its own process."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's admission: its rate-limit checks, and the budgets it draws on with its
    options (worst cases, best first)."""

    checks: tuple[Check, ...]
    holds: tuple[Hold, ...]
    options: tuple[int, ...]
    rid: str
    expires: float  # when its holds free themselves (epoch seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """``fits``: every rate limit had room (and was counted, when a budget option was taken
    too); ``counts`` per check, as seen (after this request's costs when counted);
    ``reserved``: the budget's verdict (index 0 and nothing left without budgets)."""

    fits: bool
    counts: tuple[Counts, ...]
    reserved: Reserved


_Pending = tuple[Ask, "asyncio.Future[Answer]"]


class RemoteGate:
    """Rate limits and budget holds in one Redis, shared by every replica (see the module).

    ``timeout_s`` bounds each call's answer, ``connect_timeout_s`` each new connection (rare;
    a busy event loop can hold a connect's reply past a tight bound), ``retry_s`` how often
    Redis is tried again while it is away, ``clock`` gives the windows' and holds' time.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = PREFIX,
        window_s: float = 60.0,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        retry_s: float = 5.0,
        settle_every_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = Connection(url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self._sha = self._redis.script(GATE)
        self._prefix = prefix
        self._window_s = window_s
        self._retry_s = retry_s
        self._settle_every_s = settle_every_s
        self._clock = clock
        self._asks: list[_Pending] = []
        self._settled: list[Settled] = []
        self._adjusted: list[tuple[str, int]] = []  # a tokens window's name, its delta
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()  # calls sent without a task
        self._outage: str | None = None  # why Redis is not used now; None: it is
        self._retry_at = 0.0
        self._sweep_at = 0.0

    @property
    def window_s(self) -> float:
        return self._window_s

    def usable(self) -> bool:
        """Whether to ask Redis now (it answers, or it is time to try it again)."""
        return self._outage is None or self._clock() >= self._retry_at

    async def admit(self, ask: Ask) -> Answer:
        """Decide one request, in the call that goes out at the end of this loop turn."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._asks.append((ask, future))
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._send)
        return await future

    def settle(self, settled: Settled | None, adjusted: Sequence[tuple[Check, int]]) -> None:
        """A request ended: its hold and its tokens' correction go out with the next call."""
        if settled is not None:
            self._settled.append(settled)
        for check, delta in adjusted:
            if delta:
                self._adjusted.append((check.key, delta))
        if self._soon is None and self._later is None and (self._settled or self._adjusted):
            loop = asyncio.get_running_loop()
            self._later = loop.call_later(self._settle_every_s, self._send)

    async def seed(self, hold: Hold, spent: int, now: datetime) -> None:
        """The period's spend from the ledger, unless a replica seeded it first."""
        key = f"{BUDGET_PREFIX}{hold.name}:spent"
        try:
            await self._redis.command(b"SET", key, spent, b"NX", b"EX", hold.ttl_s(now))
        except UNAVAILABLE as exc:
            self._went_away(exc)
            raise Unavailable(str(exc)) from exc

    async def flush(self) -> None:
        """Send what is pending now and wait for every call in flight (tests, shutdown)."""
        self._send()
        while self._tasks or self._inflight:
            await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        await self._redis.aclose()

    def _send(self) -> None:
        self._soon = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        asks, self._asks = self._asks, []
        settled, self._settled = self._settled, []
        adjusted, self._adjusted = self._adjusted, []
        if not (asks or settled or adjusted):
            return
        if not self.usable():  # while Redis is away: settlements dropped, asks go local
            _fail(asks, Unavailable(self._outage or "Redis is away"))
            return
        keys, args, elapsed = self._payload(asks, settled, adjusted)
        reply = self._redis.evalsha_now(self._sha, keys, args)
        if reply is not None:
            self._inflight.add(reply)
            reply.add_done_callback(lambda done: self._answered(asks, done, keys, args, elapsed))
        else:  # no connection yet: made (or refused) in a task of its own
            self._task(self._call(asks, keys, args, elapsed))

    def _task(self, call: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answered(
        self,
        asks: list[_Pending],
        done: asyncio.Future[Any],
        keys: list[str],
        args: tuple[str],
        elapsed: float,
    ) -> None:
        self._inflight.discard(done)
        if done.cancelled():
            reply: Any = ConnectionResetError("the call to Redis was cancelled")
        else:
            reply = done.exception() or done.result()
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            self._task(self._call(asks, keys, args, elapsed))  # ``evalsha`` sends the script
        else:
            self._settle_answers(asks, reply, elapsed)

    async def _call(
        self, asks: list[_Pending], keys: list[str], args: tuple[str], elapsed: float
    ) -> None:
        try:
            reply: Any = await self._redis.evalsha(self._sha, keys, args)
        except UNAVAILABLE as exc:
            reply = exc
        self._settle_answers(asks, reply, elapsed)

    def _settle_answers(self, asks: list[_Pending], reply: Any, elapsed: float) -> None:
        """Each ask its answer from the script's reply, or ``Unavailable`` for all of them."""
        if isinstance(reply, UNAVAILABLE):
            self._went_away(reply)
            _fail(asks, Unavailable(f"{type(reply).__name__}: {reply}"))
            return
        try:
            rows = reply.split(b";") if asks else []
            answers = [_answer(ask, row, elapsed) for (ask, _), row in zip(asks, rows, strict=True)]
        except Exception as exc:  # a bug, not an outage: every caller hears of it
            _fail(asks, exc)
            raise
        self._back()
        for (_, future), answer in zip(asks, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    def _payload(
        self, asks: list[_Pending], settled: list[Settled], adjusted: list[tuple[str, int]]
    ) -> tuple[list[str], tuple[str], float]:
        """The script's keys and its one argument, and how far into its window it is."""
        now = self._clock()
        window_s = self._window_s
        number = int(now // window_s)
        elapsed = now - number * window_s
        keys: list[str] = []
        words: list[str | int | float] = [
            now,
            max(0.0, 1.0 - elapsed / window_s),
            int(window_s * 2000) + 1000,
            len(settled),
            len(adjusted),
            len(asks),
            1 if asks and now >= self._sweep_at else 0,
        ]
        if asks and now >= self._sweep_at:
            self._sweep_at = now + SWEEP_EVERY_S
        for item in settled:
            for hold in item.holds:
                keys += _hold_keys(hold.name)
            words += (item.rid, item.held, item.actual, len(item.holds))
        current = f":{number}"
        for name, delta in adjusted:
            keys.append(self._prefix + name + current)
            words.append(delta)
        previous = f":{number - 1}"
        today = datetime.fromtimestamp(now, UTC)
        for ask, _ in asks:
            words += (ask.rid, ask.expires, len(ask.checks))
            for check in ask.checks:
                base = self._prefix + check.key
                keys += (base + previous, base + current)
                words += (check.cost, check.limit)
            words += (len(ask.holds), len(ask.options), *ask.options)
            for hold in ask.holds:
                keys += _hold_keys(hold.name)
                words += (hold.limit, hold.ttl_s(today))
        return keys, (json.dumps(words),), elapsed

    def _went_away(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self._retry_s
        if self._outage is not None:
            return
        self._outage = f"{type(exc).__name__}: {exc}"[:300]
        every = f"tried again every {self._retry_s:g} s"
        log.warning(
            "rate_limits_local",
            reason=self._outage,
            detail=f"Redis is unreachable: rate limits are per process until it answers ({every})",
        )
        log.warning(
            "budgets_local",
            error=type(exc).__name__,
            detail=f"Redis unreachable: budgets are kept by each process until it answers "
            f"({every})",
        )

    def _back(self) -> None:
        if self._outage is not None:
            log.info(
                "rate_limits_shared",
                detail="Redis answers again: rate limits are shared by every replica",
                was=self._outage,
            )
            log.info("budgets_shared_again")
            self._outage = None


def _fail(asks: Sequence[_Pending], exc: BaseException) -> None:
    for _, future in asks:
        if not future.done():
            future.set_exception(exc)


@functools.lru_cache(maxsize=4096)
def _hold_keys(name: str) -> tuple[str, str, str]:
    base = BUDGET_PREFIX + name
    return base + ":spent", base + ":holds", base + ":holds:sum"


def _answer(ask: Ask, row: bytes, elapsed: float) -> Answer:
    words = [int(word) for word in row.split()]
    if words[1] == UNSEEDED:
        return Answer(False, (), Reserved(UNSEEDED, (words[2],)))
    nh = len(ask.holds)
    counts = tuple(
        Counts(words[2 + nh + 2 * i], words[3 + nh + 2 * i], elapsed)
        for i in range(len(ask.checks))
    )
    return Answer(words[0] == 1, counts, Reserved(words[1], tuple(words[2 : 2 + nh])))

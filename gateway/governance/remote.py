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

The lease fast path (``leases.py``, on by default): a replica far from a request's limits
admits it from slices of them it took from Redis in the background, without waiting for a
call; the slices' changes (grants, ended requests' costs, what goes back) ride on the calls as
settlements do. Near a limit, or for a limit too small to slice, requests are decided here as
above. ``leases.py`` says the rule and the bounds.

Redis keys name ids only (key and team ids, never a key): the rate windows
``tiergate:rl:<kind>:<id>:<r|t>:<window number>`` (as ``rate_stores.RedisWindows``), the budget
holds ``tiergate:budget:<kind>:<id>:<period start>:<spent|holds|holds:sum>``; the ``spent``
counter is the one ``budgets.RedisBudgets`` keeps too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.governance.budgets import Hold, Settled
from gateway.governance.gate_script import (
    BUDGET_PREFIX,
    GATE,
    Answer,
    Ask,
    Call,
    decode,
    encode,
)
from gateway.governance.lease_state import Local, Ops
from gateway.governance.leases import IDLE_S, Leases
from gateway.governance.outage import Outage
from gateway.governance.rates import PREFIX  # the rate windows' names, as the other stores'
from gateway.governance.resp import UNAVAILABLE, Connection, ReplyError
from gateway.governance.windows import Check

SWEEP_EVERY_S = 1.0  # how often the holds of requests that never ended are looked for


class Unavailable(Exception):
    """Redis did not answer this call: the caller admits the request in its own process."""


_Pending = tuple[Ask, "asyncio.Future[Answer]"]


@dataclass(frozen=True, slots=True)
class _Batch:
    """One call's admissions and lease changes, and how far into its rate window it went."""

    asks: list[_Pending]
    ops: Ops
    elapsed: float
    settled: tuple[str, ...] = ()  # the ids of the settlements it carries


class RemoteGate:
    """Rate limits and budget holds in one Redis, shared by every replica (see the module).

    ``timeout_s`` bounds each call's answer, ``connect_timeout_s`` each new connection (rare;
    a busy event loop can hold a connect's reply past a tight bound), ``retry_s`` how often
    Redis is tried again while it is away, ``clock`` gives the windows' and holds' time;
    ``leases`` False turns the lease fast path off.
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
        leases: bool = True,
    ) -> None:
        self._redis = Connection(url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self._sha = self._redis.script(GATE)
        self._prefix = prefix
        self._window_s = window_s
        self._settle_every_s = settle_every_s
        self._clock = clock
        self._asks: list[_Pending] = []
        self._settled: list[Settled] = []
        # (a rate counter's name, its window's number (None: the current one)) → its delta
        self._adjusted: dict[tuple[str, int | None], int] = {}
        self._leases = Leases(uuid.uuid4().hex[:12], window_s, clock) if leases else None
        self._idle: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()  # calls sent without a task
        self._outage = Outage(rates=True, budgets=True, retry_s=retry_s, clock=clock)
        self._sweep_at = 0.0
        # told the ids of the requests whose settlement has reached Redis, or was given up
        # (Redis away: nothing more will come of it); ``Governor.track`` sets it
        self.landed: Callable[[Sequence[str]], None] | None = None

    @property
    def window_s(self) -> float:
        return self._window_s

    def usable(self) -> bool:
        """Whether to ask Redis now (it answers, or it is time to try it again)."""
        return self._outage.usable()

    @property
    def outage(self) -> str | None:
        """Why Redis is not used now (rate limits and budgets per process), or None."""
        return self._outage.reason

    async def check(self) -> str | None:
        """Why rate limits and budgets are this process's own now, or None while they are
        shared, after asking Redis (a PING, bounded as every call) whenever it is in use or due
        to be tried again. One that does not answer is away, as for a failed call
        (``rate_limits_local``, ``budgets_local``); one that answers after an outage is back
        (``rate_limits_shared``): readiness sees either before a request does."""
        if self.usable():
            try:
                await self._redis.command(b"PING")
            except UNAVAILABLE as exc:
                self._outage.went_away(exc)
            else:
                self._outage.back()
        return self._outage.reason

    @property
    def leasing(self) -> bool:
        """Whether the lease fast path is on."""
        return self._leases is not None

    @property
    def leased_admissions(self) -> int:
        """Requests admitted from leases so far (benchmarks, tests)."""
        return self._leases.admitted if self._leases is not None else 0

    def admit_leased(self, ask: Ask) -> Answer | None:
        """The request admitted from this replica's leases at once (no call, no wait), or None
        when they do not cover it: ``admit`` then asks Redis."""
        want = ask.options[0] if ask.holds and ask.options else 0
        local = self.admit_now(ask.checks, ask.holds, want, ask.rid, ask.expires)
        if local is None:
            return None
        return Answer(True, local.counts, local.reserved, leased=True)

    def admit_now(
        self,
        checks: Sequence[Check],
        holds: Sequence[Hold],
        want: int,
        rid: str,
        expires: float,
    ) -> Local | None:
        """``admit_leased`` without an ``Ask`` or an ``Answer`` (the gate's fast path): the
        request's planned worst case is ``want``."""
        leases = self._leases
        if leases is None or self._outage.reason is not None:
            return None
        local = leases.admit(checks, holds, want, rid, expires)
        if local is not None and leases.urgent:
            self._send_soon()
        return local

    async def admit(self, ask: Ask) -> Answer:
        """Decide one request, in the call that goes out at the end of this loop turn."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._asks.append((ask, future))
        self._send_soon()
        return await future

    def settle(self, settled: Settled | None, adjusted: Sequence[tuple[Check, int]]) -> None:
        """A request ended: its hold and its tokens' correction go out with the next call (a
        request admitted from leases: its cost, with its leases' next change)."""
        if settled is not None and (self._leases is None or not self._leases.settled(settled)):
            self._settled.append(settled)
        self._landed(())
        for check, delta in adjusted:
            if delta:
                at = (check.key, None)
                self._adjusted[at] = self._adjusted.get(at, 0) + delta
        leases = self._leases
        if (self._soon is None and self._later is None) and (
            self._settled or self._adjusted or (leases is not None and leases.pending())
        ):
            loop = asyncio.get_running_loop()
            self._later = loop.call_later(self._settle_every_s, self._send)

    def _send_soon(self) -> None:
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._send)

    async def seed(self, hold: Hold, spent: int, now: datetime) -> None:
        """The period's spend from the ledger, unless a replica seeded it first."""
        key = f"{BUDGET_PREFIX}{hold.name}:spent"
        try:
            await self._redis.command(b"SET", key, spent, b"NX", b"EX", hold.ttl_s(now))
        except UNAVAILABLE as exc:
            self._outage.went_away(exc)
            raise Unavailable(str(exc)) from exc

    async def flush(self) -> None:
        """Send what is pending now and wait for every call in flight, until nothing is left
        to send (tests, shutdown)."""
        while True:
            self._send()
            if not (self._tasks or self._inflight):
                return
            while self._tasks or self._inflight:
                await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)

    async def give_back(self) -> None:
        """Every lease's unused part back to Redis, now (shutdown, tests)."""
        if self._leases is not None:
            self._leases.give_back()
        await self.flush()

    async def aclose(self) -> None:
        self._stop_idle()
        await self.give_back()
        self._stop_idle()  # armed again by the last calls
        await self._redis.aclose()

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_leases(self) -> None:
        """Every ``IDLE_S`` while there are leases: the unused ones go back."""
        self._idle = None
        if self._leases is not None:
            self._leases.give_back(idle_s=IDLE_S)
            self._send()

    def _send(self) -> None:
        self._soon = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        asks, self._asks = self._asks, []
        settled, self._settled = self._settled, []
        adjusted, self._adjusted = self._adjusted, {}
        leases = self._leases
        ops = leases.ops() if leases is not None and leases.pending() else Ops()
        if leases and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(IDLE_S, self._idle_leases)
        if not (asks or settled or adjusted or ops):
            return
        if not self.usable():  # while Redis is away: settlements dropped, asks go local
            if leases is not None:
                leases.drop()
            _fail(asks, Unavailable(self._outage.reason or "Redis is away"))
            self._landed([item.rid for item in settled])
            return
        for name, number, delta in ops.returns:
            adjusted[name, number] = adjusted.get((name, number), 0) + delta
        now = self._clock()
        sweep = bool(asks) and now >= self._sweep_at
        if sweep:
            self._sweep_at = now + SWEEP_EVERY_S
        keys, args, elapsed = encode(
            Call(now, self._window_s, self._prefix, sweep),
            [ask for ask, _ in asks],
            settled,
            adjusted,
            ops,
        )
        batch = _Batch(asks, ops, elapsed, tuple(item.rid for item in settled))
        reply = self._redis.evalsha_now(self._sha, keys, args)
        if reply is not None:
            self._inflight.add(reply)
            reply.add_done_callback(lambda done: self._answered(batch, done, keys, args))
        else:  # no connection yet: made (or refused) in a task of its own
            self._task(self._call(batch, keys, args))

    def _task(self, call: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answered(
        self, batch: _Batch, done: asyncio.Future[Any], keys: list[str], args: tuple[str]
    ) -> None:
        self._inflight.discard(done)
        if done.cancelled():
            reply: Any = ConnectionResetError("the call to Redis was cancelled")
        else:
            reply = done.exception() or done.result()
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            self._task(self._call(batch, keys, args))  # ``evalsha`` sends the script
        else:
            self._settle_answers(batch, reply)

    async def _call(self, batch: _Batch, keys: list[str], args: tuple[str]) -> None:
        try:
            reply: Any = await self._redis.evalsha(self._sha, keys, args)
        except UNAVAILABLE as exc:
            reply = exc
        self._settle_answers(batch, reply)

    def _settle_answers(self, batch: _Batch, reply: Any) -> None:
        """Each ask its answer from the script's reply, or ``Unavailable`` for all of them; the
        leases' changes applied (or every lease dropped)."""
        asks, leases = batch.asks, self._leases
        if isinstance(reply, UNAVAILABLE):
            self._outage.went_away(reply)
            if leases is not None:
                leases.drop()
            _fail(asks, Unavailable(f"{type(reply).__name__}: {reply}"))
            self._landed(batch.settled)  # given up: their holds expire
            return
        try:
            rows = reply.split(b";") if reply else []
            answers = [
                decode(ask, row, batch.elapsed) for (ask, _), row in zip(asks, rows, strict=False)
            ]
            if leases is not None:
                if batch.ops:
                    leases.applied(batch.ops, rows[len(asks) :])
                for (ask, _), answer in zip(asks, answers, strict=True):
                    leases.answered(
                        ask.checks,
                        ask.holds,
                        ask.options,
                        answer.counts,
                        answer.reserved,
                        ask.expires,
                    )
        except Exception as exc:  # a bug, not an outage: every caller hears of it
            if leases is not None:
                leases.drop()
            _fail(asks, exc)
            self._landed(batch.settled)
            raise
        self._outage.back()
        self._landed(batch.settled)
        for (_, future), answer in zip(asks, answers, strict=True):
            if not future.done():
                future.set_result(answer)
        if leases is not None and leases.urgent:
            self._send_soon()

    def _landed(self, rids: Sequence[str]) -> None:
        """Tell ``landed`` of these settlements and of those the leases completed."""
        leases, told = self._leases, self.landed
        if leases is not None and leases.landed:
            rids = [*rids, *leases.landed]
            leases.landed.clear()
        if rids and told is not None:
            told(rids)


def _fail(asks: Sequence[_Pending], exc: BaseException) -> None:
    for _, future in asks:
        if not future.done():
            future.set_exception(exc)

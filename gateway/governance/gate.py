"""The governance gate on the request path: the key's routes, its rate limits, then its
budgets — reserving the worst case of where the request would go, stepping down to a cheaper
tier of its route when that does not fit, and refusing (429 ``budget_exceeded``) when nothing
does. ``release`` reconciles with the real cost once the request has ended.

``admit_now`` is the part that never waits (no limits to count, or this replica's leases cover
the request: the request path's common case, in one synchronous call); ``decide`` is the rest
(Redis, or this process's counters while Redis is away); ``admit`` is the one then the other.

A caller with no limits (a bootstrap key, the admin key, loopback mode) passes untouched and
costs nothing here. A grant's limits are worked out once (``grant_limits``); what this process
settles goes in batches (``settling``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import GatewayError
from gateway.governance import store
from gateway.governance.budgets import (
    UNSEEDED,
    BudgetStore,
    Hold,
    Reserved,
    Settled,
    to_nano,
)
from gateway.governance.gate_script import Ask
from gateway.governance.grant_limits import GrantLimits
from gateway.governance.grants import Grant
from gateway.governance.options import Option, Planned, Worst, options
from gateway.governance.rates import RateLimiter, RateVerdict, Subject, refusal
from gateway.governance.readiness import GovernanceState, Readiness
from gateway.governance.refusals import exhausted, rate_limited
from gateway.governance.remote import RemoteGate, Unavailable
from gateway.governance.settling import Settlements, Settler
from gateway.governance.windows import Check, headers
from gateway.policy import Decision, Policy

log = structlog.get_logger("tiergate.governance")

STEPPED_DOWN = "stepped-down"
HOLD_MARGIN_S = 30.0  # a reservation outlives its request's deadline by this much


class Denied(Exception):
    """The gate refused a request: the error for the client and the rate-limit headers."""

    def __init__(self, error: GatewayError, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.error = error
        self.headers = headers
        super().__init__(error.message)


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let through: where it may go now, and what it holds until it ends."""

    decision: Decision
    stepped: bool
    holds: tuple[Hold, ...]
    reserved: int  # nano-USD
    tokens: int  # counted toward the token rate limit
    headers: tuple[tuple[str, str], ...]  # the rate-limit headers
    shared: bool = False  # decided by ``RemoteGate`` (in Redis or from its leases): settled there
    may_escalate: bool = True  # False: the hold covers the cascade's cheap tier only


def _admitted(
    option: Option,
    holds: tuple[Hold, ...],
    tokens: int,
    headers: tuple[tuple[str, str], ...],
    *,
    shared: bool = False,
) -> Admission:
    return Admission(
        option.decision,
        option.stepped,
        holds,
        option.amount,
        tokens,
        headers,
        shared=shared,
        may_escalate=option.may_escalate,
    )


class Governor:
    """``remote``: rate limits and budgets decided together in Redis, one call per event-loop
    turn, or far from every limit from this replica's leases without a call (``leases.py``
    says when); ``budgets`` and ``rates`` are then this process's own, used while Redis is away.
    Without ``remote`` they are the stores themselves (each with its own Redis or none)."""

    def __init__(
        self,
        budgets: BudgetStore,
        rates: RateLimiter | None,
        engine: Engine | None,
        clock: Callable[[], float] = time.time,
        remote: RemoteGate | None = None,
    ) -> None:
        self.budgets = budgets
        self.rates = rates
        self.remote = remote
        self._engine = engine
        self._clock = clock
        self._settler = Settler(budgets, rates)  # what this process settles, in batches
        self._limits = GrantLimits(rated=rates is not None)  # each grant's limits and holds
        self._planned = Planned()  # the planned option's worst case, per policy
        self._tracked: Settlements | None = None
        self._readiness = Readiness()  # Redis's readiness PING, one at a time

    def track(self, settlements: Settlements) -> None:
        """Tell ``settlements`` of every settlement bound for Redis, and when it lands."""
        self._tracked = settlements
        if self.remote is not None:
            self.remote.landed = settlements.settled

    async def check(self) -> GovernanceState:
        """Where the limits are kept now, Redis asked first (``readiness.Readiness``)."""
        return await self._readiness.check(self.remote, self.rates)

    async def admit(
        self,
        grant: Grant,
        policy: Policy,
        decision: Decision,
        *,
        rid: str,
        prompt_tokens: int,
        max_tokens: int,
        fits: Callable[[str], bool],
        deadline_s: float,
        step_down: bool = True,
    ) -> Admission:
        """Let the request through (maybe to a cheaper tier) or raise ``Denied``: at once when
        ``admit_now`` can, else as ``decide`` does."""
        sizes = (prompt_tokens, max_tokens)
        now = self.admit_now(grant, policy, decision, rid, sizes, fits, deadline_s)
        if now is not None:
            return now
        return await self.decide(grant, policy, decision, rid, sizes, fits, deadline_s, step_down)

    def admit_now(
        self,
        grant: Grant,
        policy: Policy,
        decision: Decision,
        rid: str,
        sizes: tuple[int, int],
        fits: Callable[[str], bool],
        deadline_s: float,
    ) -> Admission | None:
        """The request let through without waiting — it counts against nothing, or this
        replica's leases cover it (``leases.py``: far from every limit, no Redis call) — or
        None: ``decide`` decides it. ``sizes``: its prompt tokens and ``max_tokens``. Raises
        ``Denied`` when the key may not use the route."""
        refusal = grant.refusal(decision.route)
        if refusal is not None:
            raise Denied(refusal)
        tokens = sizes[0] + sizes[1]
        limited = self._limits.limited(grant)
        holds = self._limits.holds(grant)
        if not holds and not limited.subjects:  # routes only: nothing to count
            return Admission(decision, False, (), 0, tokens, ())
        remote = self.remote
        if remote is None or not remote.leasing:  # (Redis away: ``remote.admit_now`` says None)
            return None
        amount = self._planned.amount(policy, decision, sizes, fits, deadline_s) if holds else 0
        checks = limited.checks(tokens)
        expires = self._clock() + deadline_s + HOLD_MARGIN_S
        local = remote.admit_now(checks, holds, amount, rid, expires)
        if local is None:
            return None
        said = headers(checks, local.counts, remote.window_s, None) if checks else ()
        return Admission(decision, False, holds, amount, tokens, said, shared=True)

    async def decide(
        self,
        grant: Grant,
        policy: Policy,
        decision: Decision,
        rid: str,
        sizes: tuple[int, int],
        fits: Callable[[str], bool],
        deadline_s: float,
        step_down: bool = True,
    ) -> Admission:
        """Decide a request ``admit_now`` did not let through: in Redis, or in this process
        while Redis is away; stepping down when its budgets call for it, or raising
        ``Denied``."""
        prompt_tokens, max_tokens = sizes
        tokens = prompt_tokens + max_tokens
        limited = self._limits.limited(grant)
        subjects = limited.subjects
        holds = self._limits.holds(grant)
        worst = Worst(policy.prices, prompt_tokens, max_tokens, deadline_s)
        remote = self.remote
        if holds:
            step = step_down and grant.on_exhausted != "reject"
            choices = options(policy, decision, worst, fits, step_down=step)
        else:
            choices = [Option(decision, 0)]
        amounts = [option.amount for option in choices]
        if remote is not None and remote.usable():
            try:
                checks = limited.checks(tokens)
                return await self._admit_shared(
                    remote, checks, tokens, holds, choices, rid, deadline_s
                )
            except Unavailable:
                pass  # Redis went away: this process's own counters decide
        if not holds:
            check = await self._rates(subjects, tokens)
            return Admission(decision, False, (), 0, tokens, _allowed(check))
        if subjects:
            # The rate check and the budget hold are independent round trips: at once, so the
            # request waits for one, not two; whichever refuses undoes the other.
            check, got = await asyncio.gather(
                self._rates(subjects, tokens), self._hold(holds, amounts, rid, deadline_s)
            )
        else:
            check, got = None, await self._hold(holds, amounts, rid, deadline_s)
        if check is not None and not check.allowed:
            if got.index >= 0:
                await self.budgets.settle(holds, rid, 0)
            raise Denied(rate_limited(check), check.headers)
        rate_headers = _allowed(check)
        if got.index < 0:
            if subjects and self.rates is not None:
                await self.rates.settle(subjects, tokens, 0)
            raise Denied(exhausted(holds, got.left, amounts[-1]), rate_headers)
        return _admitted(choices[got.index], holds, tokens, rate_headers)

    async def _admit_shared(
        self,
        remote: RemoteGate,
        checks: tuple[Check, ...],
        tokens: int,
        holds: tuple[Hold, ...],
        choices: list[Option],
        rid: str,
        deadline_s: float,
    ) -> Admission:
        """Rate limits and budgets in one Redis call, all or nothing."""
        amounts = tuple(option.amount for option in choices) if holds else ()
        expires = self._clock() + deadline_s + HOLD_MARGIN_S
        ask = Ask(checks, holds, amounts, rid, expires)
        answer = await remote.admit(ask)
        for _ in range(len(holds)):
            if answer.reserved.index != UNSEEDED:
                break
            hold = holds[answer.reserved.left[0]]
            await remote.seed(hold, await self._spent(hold), datetime.now(UTC))
            answer = await remote.admit(ask)
        window_s = remote.window_s
        if not answer.fits:
            verdict = refusal(checks, answer.counts, window_s)
            raise Denied(rate_limited(verdict), verdict.headers)
        said = headers(checks, answer.counts, window_s, None) if checks else ()
        got = answer.reserved
        if got.index < 0:
            raise Denied(exhausted(holds, got.left, amounts[-1]), said)
        return _admitted(choices[got.index], holds, tokens, said, shared=True)

    async def _rates(self, subjects: tuple[Subject, ...], tokens: int) -> RateVerdict | None:
        if not subjects or self.rates is None:
            return None
        return await self.rates.admit(subjects, tokens)

    async def _hold(
        self, holds: tuple[Hold, ...], amounts: list[int], rid: str, deadline_s: float
    ) -> Reserved:
        expires = self._clock() + deadline_s + HOLD_MARGIN_S
        got = await self.budgets.reserve(holds, amounts, rid, expires)
        for _ in range(len(holds)):
            if got.index != UNSEEDED:
                break
            await self._seed(holds[got.left[0]])
            got = await self.budgets.reserve(holds, amounts, rid, expires)
        return got

    def release(
        self, grant: Grant, admission: Admission, rid: str, cost: Decimal | None, tokens: int
    ) -> None:
        """The request ended: its real cost replaces its reservation, and its real tokens its
        estimate. In the background, and batched: a request decided in Redis (or from a lease)
        is settled with the next call that goes there (``RemoteGate.settle``); one decided in
        this process with the next batch (``settling.Settler``)."""
        settled: Settled | None = None
        if admission.holds:
            actual = to_nano(cost) if cost is not None and cost > 0 else 0
            settled = Settled(admission.holds, rid, actual, admission.reserved)
        limited = self._limits.limited(grant)
        if admission.shared and self.remote is not None:
            if settled is not None and self._tracked is not None:
                self._tracked.unsettled(rid)  # its cost is on its way to Redis
            delta = tokens - admission.tokens
            self.remote.settle(settled, [(c, delta) for c in limited.tokens] if delta else ())
            return
        subjects = limited.subjects
        self._settler.add(settled, (subjects, admission.tokens, tokens) if subjects else None)

    def charge(self, holds: tuple[Hold, ...], rid: str, cost: int) -> None:
        """Add ``cost`` (nano-USD) to the spend of ``holds``, as a request's settlement does but
        with no reservation to drop, where this process settles (Redis, else its own
        counters); a counter not seeded yet is left to its seed. ``drain`` sends it at once."""
        settled = Settled(holds, rid, cost)
        if self.remote is not None:
            self.remote.settle(settled, ())
        else:
            self._settler.charge(settled)

    async def _seed(self, hold: Hold) -> None:
        await self.budgets.seed(hold, await self._spent(hold), datetime.now(UTC))

    async def _spent(self, hold: Hold) -> int:
        """The hold's spend this period, from the ledger (nothing when it cannot be read)."""
        spent = Decimal(0)
        if self._engine is not None:
            try:
                spent = await asyncio.to_thread(
                    store.spent, self._engine, hold.allowance, hold.start
                )
            except SQLAlchemyError as exc:
                log.warning(
                    "budget_seed_failed",
                    subject=f"{hold.allowance.kind}:{hold.allowance.id}",
                    error=str(exc).splitlines()[0][:200],
                    detail="counting this period's spend from zero until the ledger answers",
                )
        return to_nano(spent)

    async def drain(self) -> None:
        """Settle every request that has ended (tests, shutdown)."""
        await self._settler.drain()
        if self.remote is not None:
            await self.remote.flush()

    async def aclose(self) -> None:
        self._readiness.close()
        await self.drain()
        if self.remote is not None:
            await self.remote.aclose()
        await self.budgets.aclose()
        if self.rates is not None:
            await self.rates.aclose()


def _allowed(check: RateVerdict | None) -> tuple[tuple[str, str], ...]:
    """The rate-limit headers of an admitted request (none without rate limits)."""
    if check is None:
        return ()
    if not check.allowed:
        raise Denied(rate_limited(check), check.headers)
    return check.headers

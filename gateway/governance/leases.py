"""Replica-local leases: the shared gate's fast path (``remote.RemoteGate`` keeps them).

A replica far from every limit a request counts against admits it without a Redis round trip,
from slices of those limits it took from Redis beforehand, in the background:

* a **rate lease** is ``chunk`` requests (or tokens) counted in Redis's current rate window for
  this replica; the replica admits from it while that window is current; what it did not use
  goes back (subtracted from that window) when the window ends, after ``IDLE_S`` without use,
  or at shutdown;
* a **budget lease** is one hold in the budget's Redis holds (``lease:<gate>:<n> <amount>``,
  with an expiry like any hold); the replica reserves each request's worst case from it; an
  ended request's real cost goes to Redis's spend with the next call (the lease shrinking by as
  much, so spend plus holds never grows), within ``settle_every_s`` plus a round trip; what is
  unused goes back after ``IDLE_S`` without use or at shutdown.

A lease is taken in Redis by the same script as every admission, against the same counters, so
what is leased counts exactly as admitted requests do: **shared counters never pass a limit
because of a lease, whatever the number of replicas**. A budget's spend plus its holds (leases
included) stays within the budget (the overshoot is what it is without leases: none past the
worst-case reservations); a rate window counts every lease whole, so it errs on the safe side by
at most the leases' unused parts until they go back: under 1.5 ``chunk`` per replica and limit
(a lease grows by a chunk only when less than half a chunk of it is free). That is also what
leases cost: a replica's request may be refused while that much sits unused in another
replica's lease. Redis's ``spent`` lags the real spend by at most ``settle_every_s`` plus a
round trip (the reservation covers it meanwhile).

The rule (when the fast path is on for a limit; off, every request is decided in Redis, as
before):

* ``chunk = limit // SHARE`` (1/64 of the limit) must cover at least ``MIN_USES`` (8) requests
  like this one: a requests limit of at least 512 a minute, a tokens limit of at least 512 times
  the request's tokens, a budget of at least 512 times the request's worst case (a request with
  a zero worst case, an unpriced tier, needs only the budget's period seen in Redis);
* a lease is granted only while, after it, ``RESERVE`` (8) more chunks (1/8 of the limit) are
  left unleased and unreserved: near a limit every replica decides in Redis again, one request
  after the other, and only what a replica leased earlier (under 1.5 chunks per limit) is spent
  from its lease;
* a request is admitted locally only when every one of its limits and budgets has a lease
  covering it (its planned option's worst case for budgets: stepping down is decided in Redis)
  and its holds' expiry is within the budget leases'; otherwise it waits for Redis as before.

When Redis fails, every lease is dropped (their holds expire in Redis, their rate counts age
out with the window) and the process's own counters take over, as for any admission.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from gateway.governance.budgets import UNSEEDED, Hold, Reserved, Settled
from gateway.governance.lease_state import (
    SHARE,
    BudgetLease,
    BudgetOp,
    Local,
    Ops,
    RateLease,
    RateOp,
)
from gateway.governance.windows import Check, Counts

MIN_USES = 8  # ... and exists only when that covers at least 8 requests like the one asking
RESERVE = 8  # granted only while 8 more chunks (1/8 of the limit) stay free after it
IDLE_S = 1.0  # an unused lease goes back after this long
RENEW_S = 60.0  # a budget lease's hold outlives its requests' holds by up to this


class Leases:
    """This replica's leases, by counter (rate) and by budget hold name. ``urgent``: a grant or
    a renewal waits to be sent (send soon); ``pending``: ended requests' costs wait (send with
    the next call, or the settlement timer's)."""

    def __init__(self, gate: str, window_s: float, clock: Callable[[], float]) -> None:
        self._gate = gate
        self._window_s = window_s
        self._clock = clock
        self._rates: dict[str, RateLease] = {}
        self._budgets: dict[str, BudgetLease] = {}
        self._retired: list[BudgetLease] = []  # replaced (a new limit): given back, then gone
        self._returns: list[tuple[str, int, int]] = []
        self._rids: dict[str, tuple[tuple[BudgetLease, ...], int, float]] = {}
        self._dirty_rates: set[RateLease] = set()
        self._dirty_budgets: set[BudgetLease] = set()
        self._seq = 0
        self._landing: dict[str, int] = {}  # a request's cost → how many leases still carry it
        self.urgent = False
        self.admitted = 0  # requests admitted from leases (benchmarks, tests)
        # requests whose cost has reached Redis's spend (or was given up with the leases): the
        # caller takes them (``RemoteGate``: the journal's settlement markers)
        self.landed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._rates or self._budgets or self._retired or self._returns)

    def pending(self) -> bool:
        return bool(self._dirty_rates or self._dirty_budgets or self._returns)

    def admit(
        self,
        checks: Sequence[Check],
        holds: Sequence[Hold],
        want: int,
        rid: str,
        expires: float,
    ) -> Local | None:
        """The request admitted from this replica's leases, or None: ask Redis. ``want``: its
        planned option's worst case (what each budget lease must cover)."""
        now = self._clock()
        window_s = self._window_s
        number = int(now // window_s)
        rates = self._rates
        found: list[RateLease] = []
        for check in checks:
            rate = rates.get(check.key)
            if (
                rate is None
                or rate.number != number
                or rate.limit != check.limit
                or rate.granted - rate.used < check.cost
            ):
                return None
            found.append(rate)
        taken: list[BudgetLease] = []
        if holds:
            budgets = self._budgets
            for hold in holds:
                lease = budgets.get(hold.name)
                if (
                    lease is None
                    or lease.returning
                    or lease.hold.limit != hold.limit
                    or lease.amount - lease.used - lease.pending < want
                    or (want > 0 and expires > lease.expires)
                ):
                    return None
                taken.append(lease)
        elapsed = now - number * window_s
        counts: list[Counts] = []
        for check, rate in zip(checks, found, strict=True):
            used = rate.used = rate.used + check.cost
            rate.last = now
            counts.append(Counts(rate.prev, rate.cur - rate.granted + used, elapsed))
            if rate.granted - used < rate.chunk // 2:
                self._top_up(rate, check.limit, Counts(rate.prev, rate.cur, elapsed))
        lefts: list[int] = []
        for lease in taken:
            lease.used += want
            lease.last = now
            free = lease.amount - lease.used - lease.pending
            lefts.append(lease.room + free)
            if want > 0:
                if free < lease.chunk // 2 and lease.room >= lease.chunk * (RESERVE + 1):
                    lease.want = True
                    self._dirty_budgets.add(lease)
                    self.urgent = True
                if lease.expires - expires < RENEW_S / 2:
                    lease.renew = True
                    self._dirty_budgets.add(lease)
                    self.urgent = True
        if taken:
            self._rids[rid] = (tuple(taken), want, expires)
        self.admitted += 1
        return Local(tuple(counts), Reserved(0, tuple(lefts)))

    def settled(self, settled: Settled) -> bool:
        """A request admitted from leases ended: its worst case freed, its cost pending (True);
        False when it was not (decided in Redis: settled there)."""
        entry = self._rids.pop(settled.rid, None)
        if entry is None:
            return False
        for lease in entry[0]:
            lease.used -= entry[1]
            if settled.actual:
                lease.pending += settled.actual
                lease.rids.append(settled.rid)
                self._dirty_budgets.add(lease)
        if settled.actual and entry[0]:
            self._landing[settled.rid] = len(entry[0])
        else:
            self.landed.append(settled.rid)
        return True

    def answered(
        self,
        checks: Sequence[Check],
        holds: Sequence[Hold],
        options: Sequence[int],
        counts: Sequence[Counts],
        reserved: Reserved,
        expires: float,
    ) -> None:
        """Redis decided a request: open leases for its limits where the rule allows (see the
        module), asked for with the next call."""
        if reserved.index == UNSEEDED:
            return
        now = self._clock()
        number = int(now // self._window_s)
        elapsed = now - number * self._window_s
        for check, count in zip(checks, counts, strict=False):
            if check.limit // SHARE < MIN_USES * max(1, check.cost):
                continue  # too small a limit for this request: decided in Redis
            rate = self._rates.get(check.key)
            if rate is not None and (rate.number != number or rate.limit != check.limit):
                if rate.busy:
                    continue  # retired when its grant comes back
                self._retire_rate(rate)
                del self._rates[check.key]
                rate = None
            if rate is None:
                rate = self._rates[check.key] = RateLease(check, number, now)
            if rate.granted - rate.used < rate.chunk // 2:
                self._top_up(rate, check.limit, Counts(count.prev, count.cur, elapsed))
        taken = options[reserved.index] if holds and reserved.index >= 0 else 0
        amount = options[0] if options else 0
        for i, hold in enumerate(holds):
            chunk = hold.limit // SHARE
            if amount > 0 and chunk < MIN_USES * amount:
                continue
            lease = self._budgets.get(hold.name)
            if lease is not None and lease.hold.limit != hold.limit:
                del self._budgets[hold.name]
                lease.returning = True
                lease.want = False
                self._retired.append(lease)
                self._dirty_budgets.add(lease)
                lease = None
            if lease is None:
                span = max(0.0, expires - now) + RENEW_S
                lease = self._budgets[hold.name] = BudgetLease(hold, span, now)
            left = reserved.left[i] - taken if i < len(reserved.left) else 0
            lease.room = left
            if amount > 0 and lease.free() < chunk // 2 and left >= chunk * (RESERVE + 1):
                lease.want = True
                self._dirty_budgets.add(lease)
                self.urgent = True

    def ops(self) -> Ops:
        """What to send now: grants wanted, costs pending, leases given back. Each lease has one
        change in flight at a time (one waiting for its answer stays to be sent after)."""
        self.urgent = False
        now = self._clock()
        rates: list[RateOp] = []
        if self._dirty_rates:
            waiting: set[RateLease] = set()
            for rate in self._dirty_rates:
                if rate.busy:
                    waiting.add(rate)
                elif (
                    self._rates.get(rate.key) is rate and rate.granted - rate.used < rate.chunk // 2
                ):
                    rates.append(RateOp(rate, rate.chunk, rate.limit - RESERVE * rate.chunk))
                    rate.busy = True
            self._dirty_rates = waiting
        returns, self._returns = tuple(self._returns), []
        budgets: list[BudgetOp] = []
        if self._dirty_budgets:
            left: set[BudgetLease] = set()
            for lease in self._dirty_budgets:
                if lease.busy:
                    left.add(lease)
                    continue
                keep = (
                    lease.used if lease.returning else max(lease.used, lease.amount - lease.pending)
                )
                low = lease.free() < lease.chunk // 2  # as it is now: one grant at a time
                grow = lease.chunk if lease.want and low and not lease.returning else 0
                self._seq += 1
                budgets.append(
                    BudgetOp(
                        lease,
                        lease.rid,
                        lease.amount,
                        lease.pending,
                        f"lease:{self._gate}:{self._seq}",
                        keep,
                        keep + grow,
                        lease.hold.limit - RESERVE * lease.chunk,
                        now + lease.span,
                    )
                )
                lease.busy = True
                lease.sent = lease.pending
                lease.sending, lease.rids = lease.rids, []
                lease.want = lease.renew = False
            self._dirty_budgets = left
        return Ops(tuple(rates), tuple(budgets), returns)

    def applied(self, ops: Ops, rows: Sequence[bytes]) -> None:
        """Redis's answers to ``ops`` (one row each: rate grants, then budget changes)."""
        for op, row in zip(ops.rates, rows, strict=False):
            got, prev, cur = (int(word) for word in row.split())
            rate = op.lease
            rate.busy = False
            rate.granted += got
            rate.prev, rate.cur = prev, cur
            if self._rates.get(rate.key) is not rate:  # retired while in flight
                self._retire_rate(rate)
        for change, row in zip(ops.budgets, rows[len(ops.rates) :], strict=False):
            amount, room = (int(word) for word in row.split())
            lease = change.lease
            lease.busy = False
            # the script's room is under the ceiling: the limit's is the reserve more
            lease.amount, lease.rid = amount, change.new_rid
            lease.room = room + RESERVE * lease.chunk if room >= 0 else room
            lease.expires = change.expires
            lease.pending -= lease.sent
            lease.sent = 0
            for rid in lease.sending:
                left = self._landing.pop(rid, 1) - 1
                if left > 0:
                    self._landing[rid] = left
                else:
                    self.landed.append(rid)
            lease.sending = []
            if lease.pending or lease.want or lease.renew:
                self._dirty_budgets.add(lease)
            if not lease.returning:
                continue
            current = self._budgets.get(lease.hold.name) is lease
            if lease.used <= 0 and lease.pending <= 0:
                if current:
                    del self._budgets[lease.hold.name]
                else:
                    self._retired.remove(lease)
            elif current:
                lease.returning = False  # requests still in flight: it stays for their costs

    def give_back(self, *, idle_s: float | None = None) -> None:
        """Mark the leases unused for ``idle_s`` (None: every lease) to go back with the next
        call, and forget the requests that never ended (past their holds' expiry)."""
        now = self._clock()
        number = int(now // self._window_s)
        for key, rate in list(self._rates.items()):
            if rate.busy:
                continue
            if idle_s is None or rate.number != number or now - rate.last >= idle_s:
                self._retire_rate(rate)
                del self._rates[key]
        for lease in (*self._budgets.values(), *self._retired):
            if idle_s is None or (now - lease.last >= idle_s and lease.amount > lease.used):
                lease.returning = True
                lease.want = False
                self._dirty_budgets.add(lease)
        for rid in [rid for rid, entry in self._rids.items() if entry[2] < now]:
            leases, amount, _ = self._rids.pop(rid)
            for lease in leases:
                lease.used -= amount

    def drop(self) -> None:
        """Redis failed: every lease is forgotten (see the module)."""
        self._rates.clear()
        self._budgets.clear()
        self._retired.clear()
        self._returns.clear()
        self._rids.clear()
        self._dirty_rates.clear()
        self._dirty_budgets.clear()
        self.landed += self._landing  # their costs are lost for Redis: nothing more will come
        self._landing.clear()
        self.urgent = False

    def _top_up(self, rate: RateLease, limit: int, counts: Counts) -> None:
        """Ask for another chunk when the window has room for it and the reserve."""
        share = max(0.0, 1.0 - counts.elapsed_s / self._window_s)
        room = limit - math.floor(counts.prev * share) - counts.cur
        if room >= rate.chunk * (RESERVE + 1) and not rate.busy and rate not in self._dirty_rates:
            self._dirty_rates.add(rate)
            self.urgent = True

    def _retire_rate(self, rate: RateLease) -> None:
        unused = rate.granted - rate.used
        if unused > 0:
            self._returns.append((rate.key, rate.number, -unused))
        rate.granted = rate.used
        self._dirty_rates.discard(rate)

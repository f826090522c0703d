"""What a replica's leases are made of (``leases.Leases`` keeps them): each rate lease and
budget lease it holds, the changes it sends to Redis with its next call (``Ops``), and what a
request admitted from them learns (``Local``). The rules for taking, using and giving back
leases are in ``gateway.governance.leases``."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.governance.budgets import Hold, Reserved
from gateway.governance.windows import Check, Counts

SHARE = 64  # a lease is 1/64 of its limit


class RateLease:
    """Mutable, owned by ``Leases``: ``granted`` units counted in Redis's window ``number`` of
    counter ``key`` for this replica, ``used`` of them admitted; ``prev`` and ``cur`` as the
    last grant saw them (``cur`` with every grant in it)."""

    __slots__ = (
        "busy",
        "chunk",
        "cur",
        "granted",
        "key",
        "last",
        "limit",
        "number",
        "prev",
        "used",
    )

    def __init__(self, check: Check, number: int, now: float) -> None:
        self.key = check.key
        self.limit = check.limit
        self.chunk = check.limit // SHARE
        self.number = number
        self.granted = 0
        self.used = 0
        self.prev = 0
        self.cur = 0
        self.busy = False
        self.last = now


class BudgetLease:
    """Mutable, owned by ``Leases``: ``amount`` held in Redis as member ``rid`` (until
    ``expires``); ``used`` the worst cases of the requests admitted from it still in flight;
    ``pending`` the real costs of those that ended, not yet added to Redis's spend (``sent``
    of them in the change in flight); ``rids`` the requests whose costs are pending (``sending``
    those of the change in flight); ``room`` what Redis had left unreserved at the last
    answer."""

    __slots__ = (
        "amount",
        "busy",
        "chunk",
        "expires",
        "hold",
        "last",
        "pending",
        "renew",
        "returning",
        "rid",
        "rids",
        "room",
        "sending",
        "sent",
        "span",
        "used",
        "want",
    )

    def __init__(self, hold: Hold, span: float, now: float) -> None:
        self.hold = hold
        self.chunk = hold.limit // SHARE
        self.amount = 0
        self.rid = ""
        self.expires = 0.0
        self.span = span
        self.used = 0
        self.pending = 0
        self.sent = 0
        self.rids: list[str] = []
        self.sending: list[str] = []
        self.room = 0
        self.busy = False
        self.want = False  # grow by a chunk with the next change
        self.renew = False  # push the hold's expiry with the next change
        self.returning = False  # give back what is not in use with the next change
        self.last = now

    def free(self) -> int:
        return self.amount - self.used - self.pending


@dataclass(frozen=True, slots=True)
class RateOp:
    """Grant ``want`` units of ``lease``'s window if, after them, it stays within
    ``ceiling``."""

    lease: RateLease
    want: int
    ceiling: int


@dataclass(frozen=True, slots=True)
class BudgetOp:
    """Replace ``lease``'s hold (``old_rid``, ``old_amount``) by one of ``want`` if it fits
    under ``ceiling``, else of ``keep``; add ``delta`` to the spend; the new hold is
    ``new_rid`` until ``expires``."""

    lease: BudgetLease
    old_rid: str
    old_amount: int
    delta: int
    new_rid: str
    keep: int
    want: int
    ceiling: int
    expires: float


@dataclass(frozen=True, slots=True)
class Ops:
    """What goes to Redis with the next call: rate grants, budget lease changes, and the
    unused parts of rate leases given back (``(counter, window number, negative delta)``)."""

    rates: tuple[RateOp, ...] = ()
    budgets: tuple[BudgetOp, ...] = ()
    returns: tuple[tuple[str, int, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rates or self.budgets or self.returns)


@dataclass(frozen=True, slots=True)
class Local:
    """A request admitted from leases: its rate counts (for the headers: the last grant's,
    less what this replica has not used) and its budgets' room as last seen."""

    counts: tuple[Counts, ...]
    reserved: Reserved

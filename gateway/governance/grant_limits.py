"""A grant's limits as the governance gate uses them, worked out once and kept per grant: its rate
limits (``Limited``: subjects and checks) and its budgets' holds in their current periods. The
memos (``GrantLimits``) never grow without bound (keys and grants come and go) and a hold is
worked out again when its period ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.governance.budgets import Hold
from gateway.governance.grants import Allowance, Grant
from gateway.governance.rates import Limits, Subject, checks_for
from gateway.governance.windows import Check


@dataclass(frozen=True, slots=True)
class Limited:
    """A grant's rate limits as the gate uses them: its subjects, and its checks (the tokens
    ones also at no cost: where a settlement's correction goes)."""

    grant: Grant
    subjects: tuple[Subject, ...]
    limits: tuple[Check, ...]  # at no cost
    tokens: tuple[Check, ...]
    # the checks of the last few token counts asked (requests of one client are much alike)
    memo: dict[int, tuple[Check, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, grant: Grant, subjects: tuple[Subject, ...]) -> Limited:
        limits = tuple(checks_for(subjects, 0))
        return cls(grant, subjects, limits, tuple(c for c in limits if c.dimension == "tokens"))

    def checks(self, tokens: int) -> tuple[Check, ...]:
        """The checks of a request that may use ``tokens``: one request, that many tokens."""
        known = self.memo.get(tokens)
        if known is not None:
            return known
        cost = max(0, tokens)
        made = tuple(
            Check(c.name, c.key, c.dimension, c.limit, 1 if c.dimension == "requests" else cost)
            for c in self.limits
        )
        if len(self.memo) >= 64:
            self.memo.clear()
        self.memo[tokens] = made
        return made


class GrantLimits:
    """The gate's memo of its grants' rate limits and budget holds, by grant."""

    def __init__(self, *, rated: bool) -> None:
        self._rated = rated  # False: the gate counts no rates, so a grant has no rate limits
        self._grants: dict[int, Limited] = {}  # by id(grant)
        self._holds: dict[Allowance, tuple[Hold, float]] = {}  # → the hold, until when
        self._grant_holds: dict[int, tuple[Grant, tuple[Hold, ...], float]] = {}  # by id(grant)

    def limited(self, grant: Grant) -> Limited:
        """The grant's rate limits, worked out once per grant (the key book keeps its grants
        until it is refreshed)."""
        known = self._grants.get(id(grant))
        if known is None or known.grant is not grant:
            if len(self._grants) > 10_000:  # refreshed grants replace the old: never grow
                self._grants.clear()
            known = self._grants[id(grant)] = Limited.of(
                grant, rate_subjects(grant) if self._rated else ()
            )
        return known

    def holds(self, grant: Grant) -> tuple[Hold, ...]:
        """The grant's budgets in their current periods (each worked out once a period)."""
        now = time.time()
        known_grant = self._grant_holds.get(id(grant))
        if known_grant is not None and known_grant[0] is grant and now < known_grant[2]:
            return known_grant[1]
        budgets = grant.budgets
        if not budgets:
            return ()
        out: list[Hold] = []
        for allowance in budgets:
            known = self._holds.get(allowance)
            if known is None or now >= known[1]:
                hold = Hold.of(allowance, datetime.now(UTC))
                until = hold.resets.timestamp() if hold.resets is not None else float("inf")
                if len(self._holds) > 10_000:  # keys come and go: never grow without bound
                    self._holds.clear()
                self._holds[allowance] = known = (hold, until)
            out.append(known[0])
        holds = tuple(out)
        if len(self._grant_holds) > 10_000:
            self._grant_holds.clear()
        until = min(self._holds[a][1] for a in budgets)
        self._grant_holds[id(grant)] = (grant, holds, until)
        return holds


def rate_subjects(grant: Grant) -> tuple[Subject, ...]:
    """The key and team a request's rate limits count against (those with a limit)."""
    return tuple(
        Subject(a.kind, a.id, Limits(a.rpm, a.tpm))
        for a in grant.allowances
        if a.rpm is not None or a.tpm is not None
    )

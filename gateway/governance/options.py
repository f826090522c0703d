"""Where a request under a budget may go, and what each place may cost at most: the decision
as planned, cheaper versions of it, each cheaper tier of its route (a step down), and for a tier
with a confidence cascade the escalation counted in or left out. The gate reserves the first
that fits every budget the request draws on."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.governance.budgets import to_nano
from gateway.policy import Candidate, Decision, Policy
from gateway.policy.pricing import HardwarePrice, PriceBook, TokenPrice
from gateway.routing.cascade import escalation


@dataclass(frozen=True, slots=True)
class Option:
    """One place the request may go, with its worst case: ``stepped`` when a budget moved it
    to a cheaper tier; ``may_escalate`` False when its amount leaves out the escalation of the
    tier's cascade (the amount with it did not fit)."""

    decision: Decision
    amount: int  # nano-USD
    stepped: bool = False
    may_escalate: bool = True


@dataclass(frozen=True, slots=True)
class Worst:
    """What a request may cost at most on a backend."""

    prices: PriceBook
    prompt_tokens: int
    max_tokens: int
    busy_s: float

    def of(self, backend: str) -> Decimal:
        rule = self.prices.rules.get(backend)
        if isinstance(rule, TokenPrice):
            return self.prompt_tokens * rule.input + self.max_tokens * rule.output
        if isinstance(rule, HardwarePrice):
            return rule.per_ms * Decimal(str(self.busy_s * 1000.0))
        return Decimal(0)  # unpriced (a scripted fake): nothing to hold

    def of_all(self, candidates: Sequence[Candidate]) -> int:
        """The dearest candidate's worst case, in nano-USD rounded up."""
        rules = self.prices.rules
        out = 0
        for candidate in candidates:
            rule = rules.get(candidate.backend)
            if rule is not None:
                nano = _nano(rule, self.prompt_tokens, self.max_tokens, self.busy_s)
                out = max(out, nano)
        return out


@functools.lru_cache(maxsize=4096)
def _nano(
    rule: TokenPrice | HardwarePrice, prompt_tokens: int, max_tokens: int, busy_s: float
) -> int:
    """A worst case in nano-USD (requests of a client are much alike: their worst cases repeat,
    a hardware price's always, it depends on the deadline alone)."""
    if isinstance(rule, TokenPrice):
        return to_nano(prompt_tokens * rule.input + max_tokens * rule.output, up=True)
    return to_nano(rule.per_ms * Decimal(str(busy_s * 1000.0)), up=True)


def options(
    policy: Policy,
    decision: Decision,
    worst: Worst,
    fits: Callable[[str], bool],
    *,
    step_down: bool,
) -> list[Option]:
    """Where the request may go, best first, each with its worst case: the decision as planned;
    its chosen tier without the pricier fallbacks; then (``step_down``) each cheaper tier of the
    route, the next cheaper first. A tier with a cascade comes twice: first with the tiers it
    would escalate to counted in (both calls are billed), then without, its escalation off."""
    places: list[tuple[Decision, bool]] = [(decision, False)]
    chosen = [c for c in decision.candidates if c.tier == decision.tier]
    if chosen and len(chosen) < len(decision.candidates):
        places.append((_replace(decision, decision.tier, chosen, None), False))
    route = policy.routes.get(decision.route)
    if step_down and not decision.pinned and route is not None and decision.tier in route.tiers:
        below = list(route.tiers[: route.tiers.index(decision.tier)])
        for tier in reversed(below):
            kept = [Candidate(b, tier) for b in policy.tier(tier).backends if fits(b)]
            if kept:
                why = f"budget: stepped down from tier {decision.tier!r} to {tier!r}"
                places.append((_replace(decision, tier, kept, why), True))
    out: list[Option] = []
    for place, stepped in places:
        amount = worst.of_all(place.candidates)
        up = escalation(policy, place, fits)
        if up is not None:
            out.append(Option(place, amount + worst.of_all(up.candidates), stepped))
            out.append(Option(place, amount, stepped, may_escalate=False))
        else:
            out.append(Option(place, amount, stepped))
    return out


def planned(
    policy: Policy, decision: Decision, worst: Worst, fits: Callable[[str], bool]
) -> Option:
    """``options``' first: the decision as planned, with its cascade's escalation counted in
    when it has one (all a request admitted from a lease may take: ``leases.py``)."""
    amount = worst.of_all(decision.candidates)
    up = escalation(policy, decision, fits)
    if up is not None:
        amount += worst.of_all(up.candidates)
    return Option(decision, amount)


def _replace(
    decision: Decision, tier: str, candidates: Sequence[Candidate], why: str | None
) -> Decision:
    reasons = decision.reasons if why is None else (*decision.reasons, why)
    return Decision(decision.route, tier, tuple(candidates), decision.pinned, reasons)


class Planned:
    """``planned``'s worst case, remembered per policy for a tier without a cascade: it then
    depends on the prices, the candidates, the request's sizes and its deadline alone (with a
    cascade, the escalation also on what ``fits`` the request: worked out each time). The
    lease fast path asks it once per request."""

    __slots__ = ("_amounts", "_cascading", "_policy")

    def __init__(self) -> None:
        self._policy: Policy | None = None
        self._cascading: frozenset[str] = frozenset()
        self._amounts: dict[tuple[str, tuple[str, ...], tuple[int, int], float], int] = {}

    def amount(
        self,
        policy: Policy,
        decision: Decision,
        sizes: tuple[int, int],
        fits: Callable[[str], bool],
        deadline_s: float,
    ) -> int:
        """The worst case of ``decision`` as planned, for ``sizes`` (prompt tokens,
        ``max_tokens``), in nano-USD."""
        if self._policy is not policy:
            self._policy = policy
            self._cascading = frozenset(t.name for t in policy.tiers if t.cascade is not None)
            self._amounts = {}
        if decision.tier in self._cascading and not decision.pinned:
            worst = Worst(policy.prices, sizes[0], sizes[1], deadline_s)
            return planned(policy, decision, worst, fits).amount
        key = (decision.tier, tuple([c.backend for c in decision.candidates]), sizes, deadline_s)
        amount = self._amounts.get(key)
        if amount is None:
            worst = Worst(policy.prices, sizes[0], sizes[1], deadline_s)
            amount = worst.of_all(decision.candidates)
            if len(self._amounts) >= 4096:  # requests of a client are much alike: rarely full
                self._amounts.clear()
            self._amounts[key] = amount
        return amount

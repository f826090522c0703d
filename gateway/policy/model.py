"""A loaded policy: frozen, validated, and the routing decision that follows from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.base import Message
from adapters.config import BackendConfig
from gateway.policy.canary import CanarySpec
from gateway.policy.cascade import Cascade
from gateway.policy.pricing import PriceBook
from gateway.policy.schema import (
    BreakerSpec,
    CacheSpec,
    Fallback,
    HealthSpec,
    LabelJudgeSpec,
    LimitSpec,
    RetrySpec,
    TimeoutSpec,
)
from gateway.scoring.adaptive import AdaptiveSettings
from gateway.scoring.heuristic import Score, ScorerWeights, score
from gateway.scoring.learned import LearnedScorer
from gateway.scoring.v2 import V2Scorer

PINNED_TIER = "pinned"


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    backends: tuple[str, ...]
    max_score: float  # 1.0 on the last tier
    cascade: Cascade | None = None  # answer here first; unsure → the route's next tier


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    tiers: tuple[str, ...]  # the tiers this route may use, cheapest first
    fixed_tier: str | None
    fallback: Fallback
    cache: bool = True


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: str
    tier: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes: the chosen tier, every backend to try in order, and why."""

    route: str
    tier: str
    candidates: tuple[Candidate, ...]
    pinned: bool
    reasons: tuple[str, ...]


class UnknownRoute(LookupError):
    """The request's ``model`` names neither a route nor a backend."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(
            f"unknown model {name!r}: use a route or a backend name (valid: {', '.join(valid)})"
        )


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    hash: str
    backends: Mapping[str, BackendConfig]
    tiers: tuple[Tier, ...]
    routes: Mapping[str, Route]
    default_route: str
    scorer: ScorerWeights
    timeouts: TimeoutSpec
    breaker: BreakerSpec
    retries: RetrySpec
    health: HealthSpec
    limits: LimitSpec
    base_dir: Path
    prices: PriceBook
    cache: CacheSpec
    canary: CanarySpec | None = None
    learned: LearnedScorer | None = None  # set when the policy's scorer is kind: learned
    v2: V2Scorer | None = None  # set when the policy's scorer is kind: v2
    # Set when the policy's scorer is kind: adaptive. ``score`` is then its base scorer's; the
    # neighbours' pull is added by the routing layer, which holds the live labels.
    adaptive: AdaptiveSettings | None = None
    label_judge: LabelJudgeSpec | None = None  # kind adaptive: labels from a judge, sampled

    @property
    def scorer_kind(self) -> str:
        if self.adaptive is not None:
            return "adaptive"
        if self.v2 is not None:
            return "v2"
        return "v1" if self.learned is None else "learned"

    def score(self, messages: Sequence[Message], max_tokens: int | None) -> Score:
        """The policy's scorer on a request: v1 (weighted cues), the learned model or v2."""
        if self.v2 is not None:
            return self.v2.score(messages, max_tokens)
        if self.learned is not None:
            return self.learned.score(messages, max_tokens)
        return score(messages, max_tokens, self.scorer)

    def valid_models(self) -> list[str]:
        """What a request's ``model`` may say: routes first, then backends."""
        return [*self.routes, *(b for b in self.backends if b not in self.routes)]

    def tier(self, name: str) -> Tier:
        return next(t for t in self.tiers if t.name == name)

    def tier_of(self, backend: str) -> str:
        return next((t.name for t in self.tiers if backend in t.backends), PINNED_TIER)

    def route_for(self, model: str | None) -> Route | str:
        """The route a request's ``model`` names, or the backend it pins (a str)."""
        name = model or self.default_route
        if name in self.routes:
            return self.routes[name]
        if name in self.backends:
            return name
        raise UnknownRoute(name, self.valid_models())

    def needs_score(self, target: Route | str) -> bool:
        return isinstance(target, Route) and target.fixed_tier is None

    def reachable(self, target: Route | str) -> tuple[Candidate, ...]:
        """Every candidate ``decide`` may give a request for ``target``, whatever its score:
        a pinned backend, a fixed tier's candidates, or those of each tier a score can choose
        (in the order first met). What readiness counts: a backend outside it never serves
        the route."""
        if isinstance(target, str) or not self.needs_score(target):
            return self.decide(target, None).candidates
        found: dict[str, Candidate] = {}
        for name in target.tiers:  # a score of a tier's max_score chooses that tier
            for candidate in self.decide(target, self.tier(name).max_score).candidates:
                found.setdefault(candidate.backend, candidate)
        return tuple(found.values())

    def decide(self, target: Route | str, score: float | None) -> Decision:
        """Pick the tier and the ordered candidates for a request."""
        if isinstance(target, str):
            return Decision(
                route=target,
                tier=self.tier_of(target),
                candidates=(Candidate(target, self.tier_of(target)),),
                pinned=True,
                reasons=(f"model {target!r} pins backend {target!r}: no scoring, no fallback",),
            )
        allowed = [self.tier(name) for name in target.tiers]
        reasons: list[str] = []
        if target.fixed_tier is not None:
            chosen = self.tier(target.fixed_tier)
            reasons.append(f"route {target.name!r} always uses tier {chosen.name!r}")
        else:
            value = 0.0 if score is None else score
            chosen = allowed[-1]
            for tier in allowed:
                if value <= tier.max_score:
                    chosen = tier
                    reasons.append(f"score {value:.3f} ≤ {tier.name}.max_score {tier.max_score}")
                    break
                reasons.append(f"score {value:.3f} > {tier.name}.max_score {tier.max_score}")
        index = allowed.index(chosen)
        order = [chosen]
        if target.fallback in ("up", "up_then_down"):
            order.extend(allowed[index + 1 :])
        if target.fallback == "up_then_down":
            order.extend(reversed(allowed[:index]))
        if len(order) > 1:
            names = ", ".join(t.name for t in order[1:])
            reasons.append(f"fallback {target.fallback}: then {names}")
        seen: set[str] = set()
        candidates: list[Candidate] = []
        for tier in order:
            for backend in tier.backends:
                if backend not in seen:
                    seen.add(backend)
                    candidates.append(Candidate(backend, tier.name))
        return Decision(
            route=target.name,
            tier=chosen.name,
            candidates=tuple(candidates),
            pinned=False,
            reasons=tuple(reasons),
        )

"""From a parsed request to a routing plan: route → score → tier → ordered candidates, with the
candidates that cannot serve the request taken out (and the reason kept).

The capability filter runs on the score's decision: a candidate must have every capability the
request needs (tools, JSON output, images, logprobs, streaming) and a context window that holds
prompt + max_tokens. When the chosen tier keeps no candidate, the request moves *up* to the
first tier of its route that has one: the score may raise a request's tier, its needs set the
floor. No candidate anywhere is a 400 that names the missing capability and every backend
considered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.base import ChatRequest
from gateway.errors import BadRequest
from gateway.policy import Candidate, Decision, Policy, Route
from gateway.routing.adaptive import AdaptiveLayer, Sample
from gateway.routing.needs import PARAM_OF, CapabilityLookup, Needs, missing, needs_of
from gateway.scoring.heuristic import Score
from gateway.scoring.request_tokens import extra_prompt_tokens
from gateway.scoring.tokens import count_exact

# Token estimates within this fraction of a context window are re-counted exactly.
_EXACT_MARGIN = 0.25


@dataclass(frozen=True, slots=True)
class Plan:
    decision: Decision
    score: Score | None
    prompt_tokens: int
    scorer_s: float
    excluded: tuple[str, ...]  # candidates dropped before dispatch, with why
    needs: Needs = field(default_factory=Needs)
    long_context: bool = False  # some backend was ruled out by its context window
    screen: Callable[[str], str | None] | None = None  # why a backend cannot serve it, or None
    sample: Sample | None = None  # adaptive scorer: the embedding kept if a cheaper tier answers

    @property
    def labels(self) -> tuple[str, ...]:
        """The request's needs as the ledger records them."""
        return (*self.needs.labels(), *(("long_context",) if self.long_context else ()))

    def fits(self, backend: str) -> bool:
        """Whether ``backend`` (in the plan or not, a canary's candidate say) can serve the
        request: its capabilities, its maximum output and its context window."""
        return self.screen is None or self.screen(backend) is None


def make_plan(
    policy: Policy,
    capabilities: CapabilityLookup,
    request: ChatRequest,
    model: str | None,
    *,
    stream: bool = False,
    adaptive: AdaptiveLayer | None = None,
    owner: str | None = None,
) -> Plan:
    """Decide where a request goes. ``capabilities`` gives a backend's capabilities (context
    window ``None`` when unknown); ``adaptive`` holds the labels an adaptive policy's scorer
    learns from (without it, such a policy scores with its base scorer), and ``owner`` is the
    tenant asking (``owner_scope``), whose own feedback labels it may learn from. Raises
    ``UnknownRoute`` or ``BadRequest``."""
    target = policy.route_for(model)
    started = time.perf_counter()
    result = policy.score(request.messages, request.max_tokens)
    sample = None
    settings = policy.adaptive
    scored = isinstance(target, Route) and target.fixed_tier is None
    if adaptive is not None and settings is not None and isinstance(target, Route) and scored:
        base = result.value
        result, embedding = adaptive.score(result, request.messages, settings, owner)
        if settings.store_embeddings:
            sample = Sample(embedding, base, target.tiers[-1])
    scorer_s = time.perf_counter() - started
    decision = policy.decide(target, result.value if policy.needs_score(target) else None)
    needs = needs_of(request, stream=stream)
    extra = extra_prompt_tokens(request)
    screen = _Screen(capabilities, request, needs, result.prompt_tokens + extra, extra)
    kept = [c for c in decision.candidates if screen.why_not(c.backend) is None]
    reasons = list(decision.reasons)
    screened = list(decision.candidates)
    if isinstance(target, Route) and not any(c.tier == decision.tier for c in kept):
        raised = _raise_tier(policy, target, decision, screen)
        if raised is not None:
            reasons.append(
                f"no backend of tier {decision.tier!r} can serve this request; moved up to "
                f"tier {raised.tier!r}"
            )
            decision = raised
            screened.extend(decision.candidates)
            kept = [c for c in decision.candidates if screen.why_not(c.backend) is None]
    if not kept:
        raise screen.refusal(_considered(policy, target))
    excluded = [
        f"{name}: {why}"
        for name in dict.fromkeys(c.backend for c in screened)
        if (why := screen.why_not(name)) is not None
    ]
    if needs.names():
        reasons.append("needs " + ", ".join(needs.names()))
    if excluded or len(reasons) != len(decision.reasons):
        decision = Decision(
            route=decision.route,
            tier=kept[0].tier,
            candidates=tuple(kept),
            pinned=decision.pinned,
            reasons=(*reasons, *(f"excluded {e}" for e in excluded)),
        )
    return Plan(
        decision=decision,
        score=result if policy.needs_score(target) else None,
        prompt_tokens=result.prompt_tokens,
        scorer_s=scorer_s,
        excluded=tuple(excluded),
        needs=needs,
        long_context=screen.ruled_out_by_context,
        screen=screen.why_not,
        sample=sample,
    )


def _raise_tier(
    policy: Policy, route: Route, decision: Decision, screen: _Screen
) -> Decision | None:
    """The decision for the first tier above ``decision.tier`` with a capable backend."""
    tiers = list(route.tiers)
    index = tiers.index(decision.tier)
    for position in range(index + 1, len(tiers)):
        tier = policy.tier(tiers[position])
        if not any(screen.why_not(b) is None for b in tier.backends):
            continue
        order = [tier.name]
        if route.fallback in ("up", "up_then_down"):
            order.extend(tiers[position + 1 :])
        if route.fallback == "up_then_down":
            order.extend(reversed(tiers[:position]))
        seen: set[str] = set()
        candidates: list[Candidate] = []
        for name in order:
            for backend in policy.tier(name).backends:
                if backend not in seen:
                    seen.add(backend)
                    candidates.append(Candidate(backend, name))
        return Decision(
            route=decision.route,
            tier=tier.name,
            candidates=tuple(candidates),
            pinned=False,
            reasons=decision.reasons,
        )
    return None


def _considered(policy: Policy, target: Route | str) -> list[str]:
    if isinstance(target, str):
        return [target]
    seen: list[str] = []
    for name in target.tiers:
        seen.extend(b for b in policy.tier(name).backends if b not in seen)
    return seen


class _Screen:
    """Checks candidates against one request, remembering each verdict."""

    def __init__(
        self,
        lookup: CapabilityLookup,
        request: ChatRequest,
        needs: Needs,
        estimate: int,
        extra: int = 0,
    ) -> None:
        self._lookup = lookup
        self._request = request
        self._needs = needs
        self._estimate = estimate  # text + tools, tool calls and images
        self._extra = extra  # tools, tool calls and images alone
        self._exact: int | None = None
        self._verdicts: dict[str, str | None] = {}
        self._lacking: dict[str, list[str]] = {}

    def why_not(self, backend: str) -> str | None:
        """Why ``backend`` cannot serve the request, or ``None`` when it can."""
        if backend not in self._verdicts:
            self._verdicts[backend] = self._check(backend)
        return self._verdicts[backend]

    def _check(self, backend: str) -> str | None:
        caps = self._lookup(backend)
        lacking = missing(caps, self._needs)
        reserve = self._request.max_tokens or 1
        if caps.max_output_tokens is not None and reserve > caps.max_output_tokens:
            lacking.append("max_output_tokens")
            self._lacking[backend] = lacking
            return (
                f"max_tokens {reserve} is above its maximum output of "
                f"{caps.max_output_tokens} tokens"
            )
        if lacking:
            self._lacking[backend] = lacking
            return "lacks " + ", ".join(lacking)
        window = caps.context_window
        if window is None:
            return None
        tokens = self._estimate
        if abs(tokens + reserve - window) <= window * _EXACT_MARGIN:
            if self._exact is None:
                text = sum(count_exact(m.content) for m in self._request.messages)
                self._exact = text + self._extra
            tokens = self._exact
        if tokens + reserve > window:
            self._lacking[backend] = ["context_window"]
            return f"context window {window} < ~{tokens} prompt tokens + max_tokens {reserve}"
        return None

    @property
    def ruled_out_by_context(self) -> bool:
        return any(lacking == ["context_window"] for lacking in self._lacking.values())

    def refusal(self, considered: list[str]) -> BadRequest:
        """The 400 for a request no backend can serve."""
        details = [f"{b}: {self.why_not(b) or 'can serve it'}" for b in considered]
        lacking = [need for b in considered for need in self._lacking.get(b, [])]
        if lacking and all(need == "context_window" for need in lacking):
            return BadRequest(
                "messages: the prompt does not fit the context window of any backend this "
                "request may use: " + "; ".join(details) + ". Shorten the conversation or "
                "lower max_tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        # The capability most backends lacked names the parameter to blame.
        first = max(dict.fromkeys(lacking), key=lacking.count) if lacking else "chat"
        param = PARAM_OF.get(first, "model")
        return BadRequest(
            f"{param}: no backend this request may use supports {first} (considered: "
            + "; ".join(details)
            + "). Send it to a route whose backends can serve it, leave the parameter out, "
            "or declare the capability under `capabilities:` of a backend that has it.",
            param=param,
            code="capability_unavailable",
        )


def plan_embeddings(
    policy: Policy, capabilities: CapabilityLookup, model: str | None, prompt_tokens: int
) -> Plan:
    """Where an embeddings request goes: the embedding-capable backends of the route's tiers,
    cheapest tier first (no score: an embedding costs what it costs), or the pinned backend.
    Raises ``UnknownRoute`` or ``BadRequest``."""
    target = policy.route_for(model)
    needs = Needs(embeddings=True)
    considered = _considered(policy, target)
    kept: list[Candidate] = []
    excluded: list[str] = []
    for name in considered:
        caps = capabilities(name)
        if caps.embeddings:
            kept.append(Candidate(name, policy.tier_of(name)))
        else:
            excluded.append(f"{name}: lacks embeddings")
    if not kept:
        raise BadRequest(
            "model: no backend this request may use serves embeddings (considered: "
            + "; ".join(excluded)
            + "). Add an embedding model to the policy with `capabilities: {embeddings: true, "
            "chat: false}`, or name a backend that serves embeddings in `model`.",
            param="model",
            code="capability_unavailable",
        )
    route = target if isinstance(target, str) else target.name
    decision = Decision(
        route=route,
        tier=kept[0].tier,
        candidates=tuple(kept),
        pinned=isinstance(target, str),
        reasons=("embeddings: the route's embedding backends, cheapest tier first",),
    )
    return Plan(
        decision=decision,
        score=None,
        prompt_tokens=prompt_tokens,
        scorer_s=0.0,
        excluded=tuple(excluded),
        needs=needs,
    )


def check_message_count(count: int, limit: int, param: str, what: str = "messages") -> None:
    if count > limit:
        raise BadRequest(
            f"{param}: {count} {what} is above this gateway's limit of {limit}",
            param=param,
            code="too_many_messages",
        )


def check_max_tokens(value: int | None, limit: int, param: str) -> None:
    if value is not None and value > limit:
        raise BadRequest(
            f"{param}: {value} is above this gateway's limit of {limit} (limits.max_tokens in "
            f"the policy)",
            param=param,
            code="out_of_range",
        )

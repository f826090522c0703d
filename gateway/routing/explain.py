"""Explain a routing decision: the score and its features, the chosen tier, the ordered
candidates with each one's status, and why. Shared by ``tiergate policy explain`` (offline, from
the file) and the admin API (live, with health and breakers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.base import ChatRequest, Message
from adapters.capabilities import Capabilities, declared
from gateway.policy import Policy
from gateway.routing.plan import check_max_tokens, make_plan
from gateway.routing.pool import BackendPool, disabled_reason


def explain(
    policy: Policy,
    messages: Sequence[Message],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    pool: BackendPool | None = None,
    request: ChatRequest | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """What the gateway would do with this request, as a JSON-ready dict. ``request`` (tools,
    response_format, images, ...) replaces ``messages``/``max_tokens`` when given.

    Raises ``UnknownRoute`` or ``BadRequest`` exactly as a real request would.
    """
    if request is None:
        request = ChatRequest(messages=tuple(messages), max_tokens=max_tokens)
    check_max_tokens(request.max_tokens, policy.limits.max_tokens, "max_tokens")
    if pool is not None:
        lookup = pool.capabilities
    else:

        def lookup(name: str) -> Capabilities:
            config = policy.backends.get(name)
            return declared(config) if config is not None else Capabilities(chat=False)

    plan = make_plan(policy, lookup, request, model, stream=stream)
    decision = plan.decision
    candidates = []
    for candidate in decision.candidates:
        status = "ready"
        if pool is not None:
            state = pool.get(candidate.backend)
            if state is not None:
                reason = state.unavailable_reason()
                if reason is None and state.breaker.state() == "open":
                    reason = f"circuit open; next probe in {state.breaker.retry_in():.0f} s"
                status = reason or ("ready" if state.warm else "ready (not warm yet)")
        else:
            status = disabled_reason(policy.backends[candidate.backend]) or "configured"
        candidates.append({"backend": candidate.backend, "tier": candidate.tier, "status": status})
    score = plan.score
    return {
        "policy": policy.hash,
        "route": decision.route,
        "pinned": decision.pinned,
        "score": round(score.value, 4) if score else None,
        "prompt_tokens": plan.prompt_tokens,
        "features": [
            {
                "feature": c.feature,
                "value": round(c.value, 4),
                "contribution": round(c.contribution, 4),
            }
            for c in (score.contributions if score else ())
        ],
        "tier": decision.tier,
        "needs": list(plan.needs.names()),
        "excluded": list(plan.excluded),
        "candidates": candidates,
        "reasons": list(decision.reasons),
    }


def render(explanation: dict[str, Any]) -> str:
    """The explanation as text for a terminal."""
    lines = [f"policy     {explanation['policy']}", f"route      {explanation['route']}"]
    if explanation["pinned"]:
        lines.append("score      (pinned backend: not scored)")
    else:
        tokens = explanation["prompt_tokens"]
        lines.append(f"score      {explanation['score']:.3f}   (~{tokens} prompt tokens)")
        moved = [f for f in explanation["features"] if f["contribution"] > 0]
        if moved:
            lines.append("features   (largest contribution first)")
            for f in moved:
                lines.append(
                    f"  {f['feature']:<12} value {f['value']:.2f}  adds {f['contribution']:.3f}"
                )
        else:
            lines.append("features   none fired: a short, plain request")
    needs = explanation.get("needs") or []
    lines.append(f"needs      {', '.join(needs) if needs else 'plain text only'}")
    lines.append(f"tier       {explanation['tier']}")
    lines.append("candidates (in the order they would be tried)")
    for i, c in enumerate(explanation["candidates"], 1):
        lines.append(f"  {i}. {c['backend']:<12} tier {c['tier']:<10} {c['status']}")
    excluded = explanation.get("excluded") or []
    if excluded:
        lines.append("excluded   (cannot serve this request)")
        lines.extend(f"  - {item}" for item in excluded)
    lines.append("why")
    lines.extend(f"  - {reason}" for reason in explanation["reasons"])
    return "\n".join(lines)

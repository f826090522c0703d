"""Prefix affinity among a tier's replicas (pure).

A tier may list several replicas of one model (two Ollama hosts, say). A request goes to the
replica that most recently served the longest prefix of its prompt — its KV cache probably
still holds it, so the prompt's prefill is mostly skipped — unless that replica has more than
``margin`` more requests in flight than the least busy one: affinity must not pile everything
on one box. With no warm prefix anywhere, the least busy replica goes first.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.policy import Candidate, Decision


def leading_group(decision: Decision) -> list[Candidate]:
    """The chosen tier's candidates (they come first, contiguously)."""
    first = decision.candidates[0].tier
    group: list[Candidate] = []
    for candidate in decision.candidates:
        if candidate.tier != first:
            break
        group.append(candidate)
    return group


def with_affinity(
    decision: Decision,
    warm_tokens: Mapping[str, int],
    in_flight: Mapping[str, int],
    margin: int,
) -> tuple[Decision, int]:
    """The decision with its first replica chosen by warm prefix and load (among the replicas
    ``in_flight`` names: the usable ones); and the warm prefix (tokens) of the one put first."""
    group = [c for c in leading_group(decision) if c.backend in in_flight]  # the usable ones
    if len(group) < 2:
        return decision, warm_tokens.get(decision.candidates[0].backend, 0)
    position = {c.backend: i for i, c in enumerate(group)}
    least = min(group, key=lambda c: (in_flight.get(c.backend, 0), position[c.backend]))
    best = max(group, key=lambda c: (warm_tokens.get(c.backend, 0), -position[c.backend]))
    best_warm = warm_tokens.get(best.backend, 0)
    busier = in_flight.get(best.backend, 0) - in_flight.get(least.backend, 0)
    if best_warm and busier <= margin:
        chosen = best
        reason = f"affinity: {best.backend} holds a warm {best_warm}-token prefix"
    elif best_warm:
        chosen = least
        reason = (
            f"affinity overridden: {best.backend} holds a warm {best_warm}-token prefix but has "
            f"{busier} more requests in flight than {least.backend} (margin {margin})"
        )
    else:
        chosen = least
        reason = f"no warm prefix: least busy replica {least.backend} first"
    ordered = [chosen, *(c for c in decision.candidates if c != chosen)]
    return (
        Decision(
            route=decision.route,
            tier=decision.tier,
            candidates=tuple(ordered),
            pinned=decision.pinned,
            reasons=(*decision.reasons, reason),
        ),
        warm_tokens.get(chosen.backend, 0),
    )


def warm_prefixes(
    stamps: list[dict[str, float]],
    replicas: list[str],
    *,
    block_tokens: int,
    now: float,
    ttl_s: float,
) -> dict[str, int]:
    """For each replica, the tokens of the longest prefix it served within ``ttl_s`` (stamps
    are per prefix hash, shortest prefix first)."""
    warm = dict.fromkeys(replicas, 0)
    for depth, members in enumerate(stamps, start=1):
        for replica in replicas:
            stamped = members.get(replica)
            if stamped is not None and now - stamped <= ttl_s:
                warm[replica] = depth * block_tokens
    return warm

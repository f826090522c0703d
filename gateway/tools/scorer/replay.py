"""``tiergate policy replay``: what a new policy would have done to the ledger's recent traffic.

The ledger keeps no prompts, only each request's score, tokens, route, tier and backend. What
can be replayed honestly from that:

* the **tier** a request would get under the new thresholds, from its stored score — valid only
  while the scorer is the same (same kind, weights, artifact). When the new policy's scorer is
  v1 with other weights, a request that was scored by v1 is re-scored exactly from the features
  the ledger kept for it (``features``: numbers, not text). Otherwise (a change to or from the
  learned scorer) the stored scores mean something else and requests keep their recorded tier
  (the report says so: such a change needs labelled prompts, ``tiergate eval-router``);
* the **cost**: the row's tokens priced at the new policy's price for the backend the new tier
  would try first (the completion is assumed to be as long as the one recorded). A backend priced
  by its hardware time is charged the busy milliseconds per token that backend showed in the
  same window; one without traffic there cannot be priced and is counted as unpriced;
* the **expected quality**, when the scorer is the learned one (its score is P(strong model
  needed)): the share of requests expected to be answered well enough, 1 - P(needed) for those
  below the strongest tier.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from adapters.base import Timings, Usage
from gateway.ledger.models import RequestRow
from gateway.policy import Policy
from gateway.scoring.heuristic import rescore


@dataclass(slots=True)
class Side:
    tiers: Counter[str] = field(default_factory=Counter)
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    quality: float = 0.0  # sum of expected "good enough" over the rows with a probability score
    quality_rows: int = 0


@dataclass(frozen=True, slots=True)
class Replay:
    rows: int
    rescored: int  # rows whose tier was re-decided from the stored score or features
    from_features: int  # of those, rows re-scored from their v1 features (a weights change)
    unscorable: int  # rows that needed a score the new scorer cannot give: tier kept
    unroutable: int  # rows whose route the new policy does not have
    scorer_changed: bool
    before: Side
    after: Side
    moved: Counter[tuple[str, str]]


def same_scorer(a: Policy, b: Policy) -> bool:
    return a.scorer == b.scorer and a.scorer_kind == b.scorer_kind and _artifact(a) == _artifact(b)


def _artifact(policy: Policy) -> str | None:
    if policy.v2 is not None:
        return policy.v2.digest
    return policy.learned.digest if policy.learned is not None else None


def replay(engine: Engine, since: datetime, current: Policy, new: Policy) -> Replay:
    columns = (
        RequestRow.route,
        RequestRow.tier,
        RequestRow.backend,
        RequestRow.score,
        RequestRow.cache,
        RequestRow.prompt_tokens,
        RequestRow.completion_tokens,
        RequestRow.cached_tokens,
        RequestRow.latency_ms,
        RequestRow.server_ms,
        RequestRow.load_ms,
        RequestRow.cost_usd,
        RequestRow.features,
    )
    with engine.connect() as connection:
        rows = list(connection.execute(select(*columns).where(RequestRow.ts >= since)))
    changed = not same_scorer(current, new)
    probability = new.scorer_kind == "learned" and not changed
    per_token = _busy_ms_per_token(rows)
    before, after = Side(), Side()
    moved: Counter[tuple[str, str]] = Counter()
    rescored = unroutable = from_features = unscorable = 0
    for row in rows:
        routed = _routed(row)
        before.tiers[routed] += 1
        if row.cost_usd is None:
            before.unpriced += 1
        else:
            before.cost += Decimal(row.cost_usd)
        tier, backend, how, routable = _decide(new, row, changed)
        rescored += how in ("score", "features")
        from_features += how == "features"
        unscorable += how == "kept"
        unroutable += not routable
        after.tiers[tier] += 1
        moved[(routed, tier)] += routed != tier
        cost = _cost(new, row, backend, per_token)
        if cost is None:
            after.unpriced += 1
        else:
            after.cost += cost
        if probability and row.score is not None:
            for side, side_tier in ((before, routed), (after, tier)):
                side.quality_rows += 1
                side.quality += _good_enough(current if side is before else new, side_tier, row)
    return Replay(
        rows=len(rows),
        rescored=rescored,
        from_features=from_features,
        unscorable=unscorable,
        unroutable=unroutable,
        scorer_changed=changed,
        before=before,
        after=after,
        moved=+moved,
    )


def _routed(row: Any) -> str:
    """The tier routing sent the request to: its row's tier, or for one no tier answered (a
    row naming every tier it tried, "weak>strong") the first."""
    return str(row.tier).split(">", 1)[0]


def _decide(policy: Policy, row: Any, scorer_changed: bool) -> tuple[str, str | None, str, bool]:
    """(tier, first backend, re-decided from: "score" | "features" | "kept" (a score was
    needed and cannot be had) | "" (no score needed), routable?)"""
    if row.cache == "hit":
        return _routed(row), None, "", True  # answered from the cache: no backend, no change
    target = policy.routes.get(row.route) or (row.route if row.route in policy.backends else None)
    if target is None:
        return _routed(row), row.backend, "", False
    if policy.needs_score(target):
        value, how = _new_score(policy, row, scorer_changed)
        if value is None:
            # The recorded tier, if the new policy still has it; its first backend serves.
            known = [t for t in policy.tiers if t.name == _routed(row)]
            backend = known[0].backends[0] if known else row.backend
            return _routed(row), backend, "kept", True
        decision = policy.decide(target, value)
        return decision.tier, decision.candidates[0].backend, how, True
    decision = policy.decide(target, None)
    return decision.tier, decision.candidates[0].backend, "", True


def _new_score(policy: Policy, row: Any, scorer_changed: bool) -> tuple[float | None, str]:
    """The row's score under ``policy``'s scorer, and where it came from; None if unknown."""
    if not scorer_changed and row.score is not None:
        return float(row.score), "score"
    if policy.scorer_kind == "v1" and row.features is not None:
        return rescore(json.loads(row.features), policy.scorer), "features"
    return None, ""


def _cost(
    policy: Policy, row: Any, backend: str | None, per_token: dict[str, float]
) -> Decimal | None:
    if backend is None:
        return Decimal(0)
    usage = Usage(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
    )
    if backend == row.backend:
        timings: Timings | None = Timings(
            latency_ms=row.latency_ms, server_ms=row.server_ms, load_ms=row.load_ms
        )
    elif backend in per_token:
        busy = per_token[backend] * (row.prompt_tokens + row.completion_tokens)
        timings = Timings(latency_ms=busy, server_ms=busy)
    else:
        timings = None
    return policy.prices.price(backend, usage, timings).cost


def _busy_ms_per_token(rows: Sequence[Any]) -> dict[str, float]:
    busy: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    for row in rows:
        if row.cache == "hit" or row.prompt_tokens + row.completion_tokens == 0:
            continue
        ms = row.server_ms if row.server_ms is not None else row.latency_ms
        busy[row.backend] += max(0.0, ms - (row.load_ms or 0.0))
        tokens[row.backend] += row.prompt_tokens + row.completion_tokens
    return {b: busy[b] / tokens[b] for b in tokens if tokens[b]}


def _good_enough(policy: Policy, tier: str, row: Any) -> float:
    """1 on the strongest tier; 1 - P(strong needed) below it."""
    strongest = policy.tiers[-1].name
    return 1.0 if tier == strongest else 1.0 - float(row.score)


def to_json(result: Replay) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        total = sum(s.tiers.values())
        return {
            "tiers": dict(sorted(s.tiers.items())),
            "tier_share": {t: round(n / total, 4) for t, n in sorted(s.tiers.items())}
            if total
            else {},
            "cost_usd": float(round(s.cost, 8)),
            "unpriced_requests": s.unpriced,
            "expected_quality": round(s.quality / s.quality_rows, 4) if s.quality_rows else None,
        }

    return {
        "requests": result.rows,
        "rescored": result.rescored,
        "rescored_from_features": result.from_features,
        "kept_unscorable": result.unscorable,
        "unroutable": result.unroutable,
        "scorer_changed": result.scorer_changed,
        "before": side(result.before),
        "after": side(result.after),
        "cost_change_usd": float(round(result.after.cost - result.before.cost, 8)),
        "moved": [
            {"from": a, "to": b, "requests": n} for (a, b), n in sorted(result.moved.items())
        ],
    }


def render(result: Replay) -> str:
    data = to_json(result)
    lines = [f"{result.rows} requests in the window"]
    if result.scorer_changed and result.from_features:
        lines.append(
            f"{result.from_features} re-scored from the v1 features the ledger kept, under the "
            f"new weights and thresholds"
        )
        if result.unscorable:
            lines.append(
                f"{result.unscorable} kept their recorded tier: not scored by v1, so they "
                f"cannot be re-scored without their prompts"
            )
    elif result.scorer_changed:
        lines.append(
            "note: the new policy's scorer differs from the current one, and the ledger keeps no "
            "prompts: stored scores cannot be re-scored, so every request keeps its recorded "
            "tier and only prices are replayed. Judge a scorer change on labelled prompts with "
            "`tiergate eval-router`."
        )
    else:
        lines.append(
            f"{result.rescored} re-decided from their stored score under the new thresholds"
        )
    if result.unroutable:
        lines.append(f"{result.unroutable} used a route the new policy does not have (kept as is)")
    before, after = data["before"], data["after"]
    lines.append("")
    lines.append(f"{'tier':<16}{'before':>10}{'after':>10}")
    for tier in sorted(set(before["tiers"]) | set(after["tiers"])):
        b = before["tier_share"].get(tier, 0.0)
        a = after["tier_share"].get(tier, 0.0)
        lines.append(f"{tier:<16}{b:>10.1%}{a:>10.1%}")
    lines.append("")
    lines.append(
        f"cost: ${before['cost_usd']:.6f} as recorded → ${after['cost_usd']:.6f} at the new "
        f"policy's prices ({data['cost_change_usd']:+.6f})"
    )
    if after["unpriced_requests"] or before["unpriced_requests"]:
        lines.append(
            f"unpriced requests: {before['unpriced_requests']} before, "
            f"{after['unpriced_requests']} after (left out of the cost)"
        )
    if after["expected_quality"] is not None:
        lines.append(
            f"expected quality (share answered well enough, from P(strong needed)): "
            f"{before['expected_quality']:.1%} → {after['expected_quality']:.1%}"
        )
    else:
        lines.append(
            "expected quality: not estimated (needs the learned scorer, whose score is "
            "P(strong needed), unchanged between the two policies)"
        )
    for move in data["moved"]:
        lines.append(f"moved {move['from']} → {move['to']}: {move['requests']}")
    return "\n".join(lines)

"""The canary's effect on one routing decision (pure; called on the request path).

* split: a key in the candidate's share gets the candidate first, the tier's stable backends
  after it (so the breaker and the fallback chain still protect the client), arm ``candidate``;
  the other keys keep the decision, arm ``stable``.
* shadow: the decision is unchanged; a sample of requests is marked for a shadow call
  (arm ``stable``), made after the client has its answer.
* promoted: the candidate goes before the tier's backends wherever the tier appears in a
  decision: it is the tier's stable backend now (a runtime overlay of the active policy).
* rolled back or paused: nothing changes; the candidate takes no traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.canary.assign import bucket, in_candidate
from gateway.canary.events import Status
from gateway.policy import Candidate, Decision
from gateway.policy.canary import CanarySpec

Arm = str  # "stable" | "candidate"


@dataclass(frozen=True, slots=True)
class Routed:
    decision: Decision
    arm: Arm | None
    shadow: bool = False


def _with_candidate_first(decision: Decision, spec: CanarySpec, reason: str) -> Decision:
    rest = [c for c in decision.candidates if c.backend != spec.candidate]
    at = next((i for i, c in enumerate(rest) if c.tier == spec.tier), None)
    if at is None:
        return decision
    rest.insert(at, Candidate(spec.candidate, spec.tier))
    return Decision(
        route=decision.route,
        tier=decision.tier,
        candidates=tuple(rest),
        pinned=decision.pinned,
        reasons=(*decision.reasons, reason),
    )


def apply(
    spec: CanarySpec | None,
    status: Status | None,
    decision: Decision,
    *,
    sticky: str,
    request_id: str,
) -> Routed:
    if spec is None or status is None or decision.pinned:
        return Routed(decision, None)
    if status == "promoted":
        reason = f"canary {spec.name!r}: promoted {spec.candidate!r} leads tier {spec.tier!r}"
        return Routed(_with_candidate_first(decision, spec, reason), None)
    if status not in ("running", "ready") or decision.tier != spec.tier:
        return Routed(decision, None)
    if spec.route is not None and decision.route != spec.route:
        return Routed(decision, None)
    if spec.mode == "shadow":
        sampled = bucket(spec.name + ":shadow", request_id) < spec.percent / 100.0
        return Routed(decision, "stable" if sampled else None, shadow=sampled)
    if in_candidate(spec.name, sticky, spec.percent):
        reason = f"canary {spec.name!r}: this key is in the candidate's {spec.percent}%"
        return Routed(_with_candidate_first(decision, spec, reason), "candidate")
    return Routed(decision, "stable")

"""The pipeline's call to the governance gate: a request with a key's limits is admitted (maybe
to a cheaper tier, ``x-tiergate-budget: stepped-down``) or refused with its rate-limit headers;
either way it is counted in ``tiergate_governance_total``."""

from __future__ import annotations

from adapters.base import ChatRequest
from gateway.governance.gate import STEPPED_DOWN, Admission, Denied, Governor
from gateway.governance.grants import Grant
from gateway.metrics import Metrics
from gateway.pipeline.answers import Receipt, Refused
from gateway.policy import Decision, Policy
from gateway.routing.accounting import Outcome
from gateway.routing.plan import Plan


async def admit(
    governor: Governor | None,
    metrics: Metrics,
    grant: Grant | None,
    policy: Policy,
    decision: Decision,
    plan: Plan,
    outcome: Outcome,
    chat: ChatRequest | None,
) -> Admission | None:
    """The key's routes, rate limits and budgets (None: no key, or one without limits). The
    worst case counts every choice's prompt and ``max_tokens`` (the policy's largest when the
    request sets none); embeddings (``chat`` None) write no tokens and never step down."""
    outcome.team = grant.team if grant is not None else None
    if governor is None or grant is None or (not grant.allowances and grant.routes is None):
        return None
    n = outcome.choices
    if chat is None:
        max_tokens = 0
    else:
        max_tokens = policy.limits.max_tokens if chat.max_tokens is None else chat.max_tokens
    sizes = (plan.prompt_tokens * n, max_tokens * n)
    deadline_s = policy.timeouts.total_s
    try:
        admission = governor.admit_now(
            grant, policy, decision, outcome.rid, sizes, plan.fits, deadline_s
        )
        if admission is None:  # near a limit, or no lease yet: decided in Redis (or here)
            admission = await governor.decide(
                grant,
                policy,
                decision,
                outcome.rid,
                sizes,
                plan.fits,
                deadline_s,
                step_down=chat is not None,
            )
    except Denied as denied:
        metrics.governance.labels(decision.route, denied.error.code or "refused").inc()
        receipt = Receipt(
            request_id=outcome.rid,
            policy=outcome.policy_hash,
            route=decision.route,
            limits=denied.headers,
        )
        raise Refused(denied.error, receipt) from None
    if admission.stepped:
        metrics.governance.labels(decision.route, "stepped_down").inc()
        outcome.budget = STEPPED_DOWN
        outcome.tier = admission.decision.tier
    return admission

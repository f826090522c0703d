"""Labels for the adaptive scorer from a judge (``scorer: {kind: adaptive, judge: {...}}``).

A sampled request that a tier below its route's strongest answered (and whose embedding the
ledger keeps) goes, in the background once the client has its answer, to the next stronger tier
through the live dispatcher (breakers, ``in_flight``, the policy's timeouts); then the judge
grades the cheaper answer against the stronger one, 0 (the strong model was needed) to 10 (as
good). The label ``1 - grade`` goes into ``adaptive_labels`` (source ``judge``) on the request's
embedding, where every replica reads it at its next refresh.

Bounded like a canary's shadow: at most ``concurrency`` samples run and ``queue`` wait (beyond
that a sample is dropped), at most ``max_per_minute`` start a minute, and none starts once this
replica's calls for it have spent ``max_usd_per_day`` in the current UTC day (a sample under
way finishes: the day may end over the budget by the samples running when it was reached).
Both calls are ledger rows of their own (``canary_arm`` ``label_strong`` and ``label_judge``),
kept out of the savings report's client figures. Outcomes are counted in
``tiergate_adaptive_judge_total``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine

from adapters.base import ChatRequest, Completion
from gateway.ledger.adaptive import JUDGE, LABEL_JUDGE, LABEL_STRONG, insert_label
from gateway.ledger.entry import LedgerEntry
from gateway.policy import Candidate, Decision, Policy
from gateway.policy.schema import LabelJudgeSpec
from gateway.routing.accounting import Outcome
from gateway.routing.attempts import DispatchError
from gateway.routing.background import Call, Jobs, Parent, background_entry, call_cost
from gateway.routing.judge import TIER_INSTRUCTIONS, RateLimit, judge_request, parse_grade
from gateway.routing.plan import Plan
from gateway.routing.runtime import Active
from gateway.scoring.adaptive import feedback_label

log = structlog.get_logger("tiergate.adaptive")


@dataclass(frozen=True, slots=True)
class LabelJob:
    """One sampled request: what the background work needs of it."""

    request_id: str
    request: ChatRequest
    cheap_text: str
    strong: Decision  # the next stronger tier's backends that can serve the request
    embedding: bytes
    parent: Parent


class DailySpend:
    """What the judged samples' calls have cost this UTC day (in this process)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._day: date | None = None
        self._spent = Decimal(0)

    @property
    def spent(self) -> Decimal:
        self._roll()
        return self._spent

    def add(self, cost: Decimal) -> None:
        self._roll()
        self._spent += cost

    def _roll(self) -> None:
        today = self._now().astimezone(UTC).date()
        if today != self._day:
            self._day, self._spent = today, Decimal(0)


class LabelSampler:
    """One per process (with the ledger): offered every answered request, judges a sample."""

    def __init__(
        self,
        registry: CollectorRegistry,
        record: Callable[[LedgerEntry], object],
        engine: Engine,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._record = record
        self._engine = engine
        self._rng = rng or random.Random()
        self._clock = clock
        self._now = now
        self.spend = DailySpend(now)
        self.outcomes = Counter(
            "tiergate_adaptive_judge",
            "Judged samples for the adaptive scorer by outcome: labelled, dropped (queue full), "
            "rate_limited, over_budget, no_strong_answer, no_grade, failed.",
            ["outcome"],
            registry=registry,
        )
        self._jobs = Jobs("label-judge")
        self._spec: LabelJudgeSpec | None = None
        self._limit = RateLimit(1, clock)

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def offer(
        self,
        active: Active,
        plan: Plan,
        outcome: Outcome,
        chat: ChatRequest | None,
        answer: Completion,
    ) -> bool:
        """Judge this answered request in the background if it is sampled and the limits allow;
        whether it was. Never waits: the client's answer is already made."""
        spec, sample = active.policy.label_judge, plan.sample
        if spec is None or sample is None or chat is None or outcome.status != 200:
            return False
        if not answer.text.strip() or spec.sample <= 0 or self._rng.random() >= spec.sample:
            return False
        strong = stronger(active.policy, plan, outcome.route, outcome.tier)
        if strong is None:
            return False
        if spec is not self._spec:
            self._spec = spec
            self._jobs.bound(spec.concurrency, spec.queue)
            self._limit = RateLimit(spec.max_per_minute, self._clock)
        if self.spend.spent >= Decimal(str(spec.max_usd_per_day)):
            self.outcomes.labels("over_budget").inc()
            return False
        if self._jobs.full:
            self.outcomes.labels("dropped").inc()
            log.info("adaptive_judge_dropped", request_id=outcome.rid, reason="queue full")
            return False
        if not self._limit.acquire():
            self.outcomes.labels("rate_limited").inc()
            return False
        parent = Parent(
            outcome.key_id, outcome.policy_hash, outcome.route, strong.tier, outcome.team
        )
        request = dataclasses.replace(chat, n=1)
        job = LabelJob(outcome.rid, request, answer.text, strong, sample.embedding, parent)

        def failed(exc: Exception) -> None:
            self.outcomes.labels("failed").inc()
            log.warning("adaptive_judge_error", request_id=job.request_id, error=f"{exc!r}"[:300])

        self._jobs.spawn(lambda: self._judge(job, spec, active), failed)
        return True

    async def drain(self) -> None:
        """Wait for the samples under way (tests, shutdown)."""
        await self._jobs.drain()

    async def aclose(self) -> None:
        await self._jobs.aclose()

    async def _judge(self, job: LabelJob, spec: LabelJudgeSpec, active: Active) -> None:
        strong = await self._call(active, job, job.strong, job.request, LABEL_STRONG)
        if strong is None or not strong.text.strip():
            self.outcomes.labels("no_strong_answer").inc()
            return
        judge = Decision(
            job.parent.route, job.strong.tier, (Candidate(spec.backend, job.strong.tier),), True, ()
        )
        asked = judge_request(
            job.request, strong.text, job.cheap_text, instructions=TIER_INSTRUCTIONS
        )
        graded = await self._call(active, job, judge, asked, LABEL_JUDGE)
        grade = parse_grade(graded.text) if graded is not None else None
        if grade is None:
            self.outcomes.labels("no_grade").inc()
            return
        label = feedback_label(grade)
        await asyncio.to_thread(
            insert_label, self._engine, job.request_id, self._now(), JUDGE, label, job.embedding
        )
        self.outcomes.labels("labelled").inc()
        log.info("adaptive_judged", request_id=job.request_id, grade=grade, label=label)

    async def _call(
        self, active: Active, job: LabelJob, decision: Decision, request: ChatRequest, arm: str
    ) -> Completion | None:
        """One call through the dispatcher, booked (a row and the day's spend) when a backend
        was reached; its answer, or None."""
        ts, started = self._now(), time.perf_counter()
        try:
            served = await active.dispatcher.complete(decision, request)
        except DispatchError as exc:
            if exc.attempts:
                latency_ms = (time.perf_counter() - started) * 1000.0
                call = Call(exc.attempts[-1].backend, arm, ts, latency_ms, None, exc.last)
                self._record(background_entry(active.policy, job.parent, call))
            return None
        latency_ms = (time.perf_counter() - started) * 1000.0
        completion = served.completion
        call = Call(served.candidate.backend, arm, ts, latency_ms, completion, None)
        self.spend.add(call_cost(active.policy, call))
        self._record(background_entry(active.policy, job.parent, call))
        return completion


def stronger(policy: Policy, plan: Plan, route_name: str, tier: str) -> Decision | None:
    """The first tier of the route above ``tier`` with backends that can serve the request."""
    route = policy.routes.get(route_name)
    if route is None or tier not in route.tiers:
        return None
    for name in route.tiers[route.tiers.index(tier) + 1 :]:
        candidates = tuple(Candidate(b, name) for b in policy.tier(name).backends if plan.fits(b))
        if candidates:
            reason = f"adaptive judge: tier {tier!r}'s answer against tier {name!r}'s"
            return Decision(route_name, name, candidates, False, (reason,))
    return None

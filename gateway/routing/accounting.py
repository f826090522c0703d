"""The end of a request: its metrics, its log line, and its ledger row (with its cost).

Every request that reached a backend is accounted for here — answered, failed after attempts,
or a stream the client abandoned — exactly once (the pipeline settles each request once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import structlog

from adapters.base import Timings, Usage
from adapters.errors import BackendTimeout
from gateway import tracing
from gateway.ids import request_id
from gateway.ledger.entry import LedgerEntry, SampledEntry
from gateway.ledger.journal import INTERRUPTED
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.policy import Candidate
from gateway.policy.pricing import PriceBook, Priced
from gateway.routing import spans
from gateway.routing.attempts import Attempt, Trace
from gateway.routing.plan import Plan

if TYPE_CHECKING:
    from gateway.routing.cascade import Verdict

log = structlog.get_logger("tiergate.request")


@dataclass(slots=True)
class Outcome:
    """What is known about one request as it goes; accounted once at the end."""

    rid: str
    ts: datetime
    started: float
    key_id: str
    policy_hash: str
    stream: bool
    route: str = "-"
    tier: str = "-"
    backend: str = "-"
    model: str = "-"
    status: int = 200
    error: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    trace: Trace = field(default_factory=Trace)
    chunks: int = 0  # text chunks sent, for the estimate when a stream is cut short
    choices: int = 1  # n: each choice's call read the prompt
    prompt_estimate: int = 0  # the scorer's token count, when the backend reports none
    priced: Priced | None = None
    cache: str = "off"  # off | miss | hit | prefix:<tokens>
    cache_saved: Decimal | None = None  # what the cached answer cost when it was made
    made_by: str | None = None  # a cache hit: the backend that made the cached answer
    canary_arm: str | None = None  # stable | candidate (a canary's split or shadow sample)
    cascade: Verdict | None = None  # a cascading tier answered first: what was decided
    cascade_cost: Decimal | None = None  # what the cascade's cheap call cost (inside priced)
    api: str | None = None  # the wire format the request came through
    team: str | None = None  # the caller's team (virtual keys)
    budget: str | None = None  # stepped-down: a budget moved it to a cheaper tier

    @classmethod
    def begin(
        cls,
        policy_hash: str,
        key_id: str,
        *,
        stream: bool,
        choices: int,
        arrived: float | None = None,
    ) -> Outcome:
        """A request that arrived at ``arrived`` (``time.perf_counter()``; default now), with a
        new request id."""
        return cls(
            rid=request_id(),
            ts=datetime.now(UTC),
            started=time.perf_counter() if arrived is None else arrived,
            key_id=key_id,
            policy_hash=policy_hash,
            stream=stream,
            choices=choices,
        )

    def final_usage(self, plan: Plan) -> Usage:
        """Reported usage, or an estimate (flagged) when none arrived: the client left, or the
        backend never said."""
        if self.usage is not None:
            return self.usage
        if not self.trace.attempts or (self.status >= 500 and self.chunks == 0):
            return Usage(estimated=self.chunks > 0)
        return Usage(
            prompt_tokens=plan.prompt_tokens * self.choices,
            completion_tokens=self.chunks,
            estimated=True,
        )

    def price(self, prices: PriceBook, plan: Plan) -> Priced:
        if self.priced is None:
            usage = self.final_usage(plan)
            held = _held(prices, self.attempts)
            if self.cache == "hit":
                # No backend ran: free; the baseline is what these tokens would have cost.
                baseline = prices.baseline_cost(self.made_by or "cache", usage)
                self.priced = Priced(Decimal(0), "cache", baseline)
            elif usage.total_tokens == 0 and self.status != 200:
                self.priced = held or Priced(Decimal(0), "failed", Decimal(0))
            else:
                self.priced = prices.price(self.backend, usage, self.timings)
                self._add_cascade(prices)
                if self.choices > 1:
                    # Each choice was a call reading the prompt (billed so), but the baseline
                    # model answers ``n`` choices in one call that reads it once.
                    baseline = prices.baseline_cost(self.backend, _one_prompt(usage, self.choices))
                    self.priced = dataclasses.replace(self.priced, baseline=baseline)
                if held is not None and held.cost and self.priced.cost is not None:
                    total = self.priced.cost + held.cost
                    self.priced = dataclasses.replace(self.priced, cost=total)
        return self.priced

    def _add_cascade(self, prices: PriceBook) -> None:
        """Both calls of a cascade are billed: the discarded cheap answer's cost is added."""
        assert self.priced is not None
        spent = self.cascade.spent if self.cascade is not None else None
        if spent is None:
            self.cascade_cost = self.priced.cost if self.cascade is not None else None
            return
        first = prices.price(spent.backend, spent.usage, spent.timings)
        self.cascade_cost = first.cost
        final = self.priced
        total = None if final.cost is None or first.cost is None else final.cost + first.cost
        self.priced = Priced(total, final.source, final.baseline)

    @property
    def attempts(self) -> list[Attempt]:
        """Every backend call, a cascade's cheap one included."""
        return list(self.cascade.attempts) if self.cascade is not None else self.trace.attempts


@dataclass(frozen=True, slots=True)
class Accountant:
    metrics: Metrics
    ledger: LedgerWriter | None

    def finish(
        self, outcome: Outcome, plan: Plan, prices: PriceBook
    ) -> asyncio.Future[None] | None:
        """Metrics, log line and ledger row (journaled before this returns). A future only with
        ``journal_sync=full``: done once the row would survive a power cut; await it before the
        answer's last byte."""
        elapsed = time.perf_counter() - outcome.started
        if outcome.timings is None and outcome.trace.attempts:
            # A stream cut short (the client left, or the backend failed mid-way) never got the
            # backend's timings: its wall time stands for the busy time, so a backend priced by
            # the hour is charged an estimate (the row says so) rather than left unpriced.
            outcome.timings = Timings(latency_ms=elapsed * 1000.0)
        self._metrics(outcome, elapsed)
        usage = outcome.final_usage(plan)
        priced = outcome.price(prices, plan)
        self._log(outcome, plan, usage, elapsed)
        self._spent(outcome, usage, priced)
        if tracing.current() is not None:
            spans.settled(outcome, plan, usage, priced)
        if self.ledger is None or not (outcome.trace.attempts or outcome.cache == "hit"):
            return None  # no backend was reached: nothing to account for in the ledger
        entry = _entry(outcome, plan, usage, priced, elapsed, baseline=prices.baseline_model)
        with tracing.step("tiergate.ledger.write"):
            return self.ledger.record(_sampled(entry, outcome, plan))

    def trying(
        self, outcome: Outcome, plan: Plan, prices: PriceBook, candidate: Candidate, model: str
    ) -> asyncio.Future[None] | None:
        """A try is about to reach ``candidate``'s backend: journal the request's row as it
        would stand if the process died during the try (status 499, ``interrupted``, against
        that backend, the prompt's estimated tokens and no completion), so a request killed
        while a backend works on it (a whole answer, a stream before or after its first chunk)
        still has its row; ``finish`` replaces it. A future only with ``journal_sync=full``: a
        stream awaits it before its first byte; a whole answer's ``finish`` is awaited anyway.
        """
        if self.ledger is None or not self.ledger.journaling:
            return None  # nothing would keep it: the row is made at the end only
        usage = Usage(prompt_tokens=plan.prompt_tokens * outcome.choices, estimated=True)
        elapsed = time.perf_counter() - outcome.started
        priced = prices.price(candidate.backend, usage, Timings(latency_ms=elapsed * 1000.0))
        entry = _entry(
            outcome,
            plan,
            usage,
            priced,
            elapsed,
            baseline=prices.baseline_model,
            trying=(candidate, model),
        )
        return self.ledger.opened(entry)

    def _metrics(self, outcome: Outcome, elapsed: float) -> None:
        m = self.metrics
        m.requests.labels(outcome.route, outcome.tier, outcome.backend, outcome.status).inc()
        attempts = outcome.trace.attempts
        for i, attempt in enumerate(attempts):
            if attempt.retry is not None:
                m.retries.labels(attempt.backend, attempt.retry).inc()
            # A fallback is a failed attempt whose request then went to another candidate: not
            # one retried on the same backend, and not the last (nothing was tried after it).
            passed_on = i + 1 < len(attempts) and attempts[i + 1].retry is None
            if attempt.error is not None and passed_on:
                m.fallbacks.labels(outcome.route, attempt.backend, attempt.error).inc()
        if outcome.status == 200:
            m.latency.labels(outcome.route, outcome.tier, outcome.backend).observe(elapsed)
            ttft = outcome.timings.ttft_ms if outcome.timings else None
            if ttft is not None:
                m.ttft.labels(outcome.route, outcome.tier, outcome.backend).observe(ttft / 1000)

    def _spent(self, outcome: Outcome, usage: Usage, priced: Priced) -> None:
        m = self.metrics
        labels = [outcome.route, outcome.tier, outcome.backend]
        if m.key_labels:
            labels.append(outcome.key_id)
        if usage.prompt_tokens:
            m.tokens.labels(*labels, "input").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            m.tokens.labels(*labels, "output").inc(usage.completion_tokens)
        if usage.cached_tokens:
            m.tokens.labels(*labels, "cached").inc(usage.cached_tokens)
        if priced.cost:
            m.cost.labels(*labels).inc(float(priced.cost))
        if priced.baseline:
            m.baseline_cost.labels(*labels).inc(float(priced.baseline))

    def _log(self, outcome: Outcome, plan: Plan, usage: Usage, elapsed: float) -> None:
        timings = outcome.timings
        priced = outcome.priced
        log.info(
            "request",
            request_id=outcome.rid,
            key_id=outcome.key_id,
            route=outcome.route,
            tier=outcome.tier,
            backend=outcome.backend,
            status=outcome.status,
            error=outcome.error,
            score=round(plan.score.value, 4) if plan.score else None,
            latency_ms=round(elapsed * 1000, 2),
            ttft_ms=_rounded(timings.ttft_ms if timings else None),
            server_ms=_rounded(timings.server_ms if timings else None),
            load_ms=_rounded(timings.load_ms if timings else None),  # a cold load, apart
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            cost_usd=_money(priced.cost if priced else None),
            baseline_cost_usd=_money(priced.baseline if priced else None),
            needs=list(plan.labels),
            attempts=[a.backend for a in outcome.attempts],
            cascade=outcome.cascade.decision if outcome.cascade is not None else None,
            skipped=[s.backend for s in outcome.trace.skipped],
        )


def _entry(
    outcome: Outcome,
    plan: Plan,
    usage: Usage,
    priced: Priced,
    elapsed: float,
    *,
    baseline: str | None,
    trying: tuple[Candidate, str] | None = None,
) -> LedgerEntry:
    """The request's ledger row (a cascade's discarded cheap call counted in its tokens).
    ``baseline``: the policy's baseline model, named when the row has a baseline cost.
    ``trying`` (a candidate and its model): the row as it stands while a try on that backend
    is under way, interrupted (built here in one go: ``dataclasses.replace`` costs as much)."""
    timings = outcome.timings
    verdict = outcome.cascade
    first = verdict.spent if verdict is not None else None
    spent = first.usage if first is not None else Usage()
    status, error, tier, backend, model = (
        outcome.status,
        outcome.error,
        outcome.tier,
        outcome.backend,
        outcome.model,
    )
    ttft = timings.ttft_ms if timings else None
    chain = [a.backend for a in outcome.attempts]
    if trying is not None:
        candidate, model = trying
        status, error, tier, backend, ttft = (
            499,
            INTERRUPTED,
            candidate.tier,
            candidate.backend,
            None,
        )
        chain.append(backend)
    return LedgerEntry(
        id=outcome.rid,
        ts=outcome.ts,
        key_id=outcome.key_id,
        policy_hash=outcome.policy_hash,
        route=outcome.route,
        tier=tier,
        backend=backend,
        model=model,
        score=round(plan.score.value, 6) if plan.score else None,
        cache=outcome.cache,
        canary_arm=outcome.canary_arm,
        status=status,
        error_class=error,
        attempts=len(chain),
        fallback_chain=">".join(chain),
        stream=outcome.stream,
        prompt_tokens=usage.prompt_tokens + spent.prompt_tokens,
        completion_tokens=usage.completion_tokens + spent.completion_tokens,
        cached_tokens=usage.cached_tokens + spent.cached_tokens,
        usage_estimated=usage.estimated,
        latency_ms=round(elapsed * 1000.0, 3),
        ttft_ms=ttft,
        server_ms=timings.server_ms if timings else None,
        load_ms=timings.load_ms if timings else None,
        cost_usd=priced.cost,
        cost_source=priced.source,
        baseline_cost_usd=priced.baseline,
        cache_saved_usd=outcome.cache_saved,
        capabilities=",".join(plan.labels),
        features=_features(plan),
        cascade=verdict.decision if verdict is not None else None,
        cascade_confidence=verdict.confidence if verdict is not None else None,
        cascade_cost_usd=outcome.cascade_cost,
        cascade_prompt_tokens=verdict.first.usage.prompt_tokens if verdict else None,
        cascade_completion_tokens=verdict.first.usage.completion_tokens if verdict else None,
        api=outcome.api,
        team=outcome.team,
        budget=outcome.budget,
        baseline_model=baseline if priced.baseline is not None else None,
    )


def _held(prices: PriceBook, attempts: list[Attempt]) -> Priced | None:
    """What the tries that timed out on backends priced by machine time cost: each held its
    box, working, until the timeout (``latency_ms``), and answered nothing; None when no such
    try. The try's wall time: an upper bound when the box was still connecting, loading its
    model or had the request queued. (A backend priced by its tokens reported none for a try
    that timed out: $0.)"""
    held = [
        priced
        for a in attempts
        if a.error == BackendTimeout.__name__
        and (priced := prices.held(a.backend, a.latency_ms)) is not None
    ]
    if not held:
        return None
    return Priced(sum((p.cost or Decimal(0) for p in held), Decimal(0)), held[0].source, Decimal(0))


def _one_prompt(usage: Usage, choices: int) -> Usage:
    """``usage`` of ``choices`` calls with one prompt, as one call reading the prompt once."""
    return dataclasses.replace(
        usage,
        prompt_tokens=usage.prompt_tokens // choices,
        cached_tokens=usage.cached_tokens // choices,
        cache_write_tokens=usage.cache_write_tokens // choices,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.12f}"


def _sampled(entry: LedgerEntry, outcome: Outcome, plan: Plan) -> LedgerEntry:
    """With the prompt's embedding when the adaptive scorer routed the request and a cheaper
    tier than the route's strongest answered it: feedback on that answer becomes a label."""
    sample = plan.sample
    if sample is None or outcome.status != 200 or outcome.tier == sample.top_tier:
        return entry
    values = {f.name: getattr(entry, f.name) for f in fields(LedgerEntry)}
    return SampledEntry(**values, embedding=sample.embedding, base_score=round(sample.base, 6))


def _features(plan: Plan) -> str | None:
    """The v1 scorer's inputs, non-zero ones only (the rest are 0), for ``policy replay``."""
    inputs = plan.score.inputs if plan.score is not None else None
    if inputs is None:
        return None
    return orjson.dumps({k: v for k, v in inputs.items() if v}).decode()

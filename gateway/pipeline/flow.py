"""The pipeline's flow: ``Pipeline.handle`` and ``Pipeline.embed``, and ``_Flight``, one request
on its way (a stream's events are in ``gateway.pipeline.stream``, the governance gate's call in
``gateway.pipeline.gate``). Every request is accounted (metrics, log line, ledger row)
exactly once, at its one ending (``_Flight.settle``): a stream at its end or when closed, any
request whose call is cancelled before its answer (the client went away) then (``abandoned``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

import structlog

from adapters import spent
from adapters.base import (
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Usage,
)
from adapters.errors import BackendError
from adapters.spent import Spent
from gateway import tracing
from gateway.cache.request import RequestCache, scope_of
from gateway.cache.request import prepare as prepare_cache
from gateway.cache.service import CachedAnswer, CacheService
from gateway.canary.controller import CanaryController
from gateway.canary.shadow import shadow_job
from gateway.errors import BadGateway
from gateway.governance.gate import Admission, Governor
from gateway.governance.grants import Grant
from gateway.pipeline.answers import (
    SHUTTING_DOWN,
    Answer,
    Embedded,
    Halt,
    Inbound,
    Receipt,
    Refused,
)
from gateway.pipeline.backlog import check_backlog
from gateway.pipeline.gate import admit
from gateway.pipeline.refusing import refusing
from gateway.pipeline.stream import Stream
from gateway.policy import Candidate, Decision
from gateway.routing import cascade as cascading
from gateway.routing import spans
from gateway.routing.accounting import Accountant, Outcome
from gateway.routing.attempts import DispatchError, Trace, tiers_tried
from gateway.routing.choices import more_choices, sum_usage, total_usage
from gateway.routing.failures import client_error, public
from gateway.routing.judging import LabelSampler
from gateway.routing.plan import Plan, make_plan, plan_embeddings
from gateway.routing.runtime import Active, Runtime
from gateway.scoring.adaptive import owner_scope
from gateway.scoring.tokens import count_exact

log = structlog.get_logger("tiergate.request")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The gateway's request path over its live services."""

    runtime: Runtime
    accountant: Accountant
    cache: CacheService
    canary: CanaryController
    labels: LabelSampler | None = None  # an adaptive policy's judged samples (with the ledger)
    governor: Governor | None = None  # keys' routes, rate limits and budgets

    async def handle(self, inbound: Inbound) -> Answer | Stream:
        active = self.runtime.active
        team = inbound.grant.team if inbound.grant is not None else None
        # What this request leaves in a backend's own caches is reused within its scope only.
        scope = scope_of(active.policy.cache.responses.scope, inbound.key_id, team)
        chat = dataclasses.replace(inbound.chat, cache_scope=scope)
        outcome = Outcome.begin(
            active.policy.hash,
            inbound.key_id,
            stream=inbound.stream,
            choices=chat.n,
            arrived=inbound.arrived,
        )
        outcome.api = inbound.api
        traced = tracing.current()
        if traced is not None:
            spans.asked(chat, inbound.api, inbound.model, stream=inbound.stream)
        receipt = Receipt(request_id=outcome.rid, policy=outcome.policy_hash)
        with refusing(receipt, inbound.grant), tracing.step("tiergate.plan") as span:
            plan = make_plan(
                active.policy,
                active.pool.capabilities,
                chat,
                inbound.model,
                stream=inbound.stream,
                adaptive=active.adaptive,
                owner=owner_scope(inbound.key_id, team),
            )
            if span is not None:
                spans.planned(span, plan)
        self.accountant.metrics.scorer.observe(plan.scorer_s)
        check_backlog(self.accountant.ledger, self.accountant.metrics, outcome, plan.decision.route)
        routed = self.canary.route(
            active.policy,
            plan.decision,
            key_id=outcome.key_id,
            user=chat.user,
            headers=inbound.headers,
            rid=outcome.rid,
            fits=plan.fits,
        )
        outcome.canary_arm = routed.arm
        outcome.route, outcome.tier = plan.decision.route, plan.decision.tier
        outcome.prompt_estimate = plan.prompt_tokens
        metrics = self.accountant.metrics
        admission = await admit(
            self.governor,
            metrics,
            inbound.grant,
            active.policy,
            routed.decision,
            plan,
            outcome,
            chat,
        )
        flight = _Flight(self, active, chat, outcome, plan, None, routed.shadow)
        flight.admission, flight.grant, flight.halt = admission, inbound.grant, inbound.halt
        try:
            cache, decision = await prepare_cache(
                self.cache,
                active.policy,
                admission.decision if admission is not None else routed.decision,
                chat,
                key_id=outcome.key_id,
                team=team,
                in_flight=lambda name: active.pool[name].in_flight,
                usable=lambda name: active.pool[name].unavailable_reason() is None,
            )
            flight.cache = cache
            if cache.hit is not None:
                answer = flight.from_cache(cache.hit)
                await flight.durable()
                return answer
            if routed.arm == "candidate":
                cache.key = None  # a candidate's answers are on trial: never replayed to others
            outcome.cache = cache.label()
            if inbound.stream:
                return await flight.stream(decision)
            return await flight.whole(decision)
        except asyncio.CancelledError:
            flight.abandoned()
            raise

    async def embed(
        self,
        request: EmbeddingRequest,
        model: str | None,
        key_id: str,
        arrived: float,
        grant: Grant | None = None,
        halt: Halt | None = None,
    ) -> Embedded:
        """Embeddings: the route's embedding backends, cheapest tier first, with fallback;
        priced like chat (input tokens; a chat baseline says nothing about embeddings)."""
        active = self.runtime.active
        policy = active.policy
        outcome = Outcome.begin(policy.hash, key_id, stream=False, choices=1, arrived=arrived)
        outcome.api = "embeddings"
        if tracing.current() is not None:
            spans.asked(None, "embeddings", model, stream=False)
        tokens = sum(count_exact(text) for text in request.inputs)
        receipt = Receipt(request_id=outcome.rid, policy=outcome.policy_hash)
        with refusing(receipt, grant), tracing.step("tiergate.plan") as span:
            plan = plan_embeddings(policy, active.pool.capabilities, model, tokens)
            if span is not None:
                spans.planned(span, plan)
        outcome.route, outcome.tier = plan.decision.route, plan.decision.tier
        outcome.prompt_estimate = tokens
        metrics = self.accountant.metrics
        check_backlog(self.accountant.ledger, metrics, outcome, plan.decision.route)
        admission = await admit(
            self.governor, metrics, grant, policy, plan.decision, plan, outcome, None
        )
        decision = admission.decision if admission is not None else plan.decision
        flight = _Flight(self, active, None, outcome, plan, None, shadow=False)
        flight.admission, flight.grant = admission, grant
        if halt is not None:
            flight.halt = halt
        try:
            served = await active.dispatcher.embed(
                decision, request, arrived=arrived, trace=outcome.trace
            )
        except DispatchError as exc:
            raise await flight.refused(exc) from None
        except asyncio.CancelledError:
            flight.abandoned()
            raise
        flight.served_by(served.candidate, served.trace)
        result = served.embeddings
        outcome.model = result.model
        outcome.usage, outcome.timings = result.usage, result.timings
        outcome.priced = dataclasses.replace(outcome.price(policy.prices, plan), baseline=None)
        flight.settle()
        await flight.durable()
        return Embedded(result, flight.receipt(served=True, priced=True))


@dataclass(slots=True)
class _Flight:
    """One request on its way: what the pipeline knows of it, and its one ending."""

    pipeline: Pipeline
    active: Active
    chat: ChatRequest | None
    outcome: Outcome
    plan: Plan
    cache: RequestCache | None
    shadow: bool
    settled: bool = False
    written: asyncio.Future[None] | None = None  # the row's journal write (None: no journal)
    admission: Admission | None = None  # what the governance gate let through and holds
    grant: Grant | None = None
    spent: Spent | None = None  # what backend calls given up on had cost (adapters.spent)
    tried: asyncio.Future[None] | None = None  # the last try's journal write (``trying``)
    halt: Halt = dataclasses.field(default_factory=Halt)  # the server ending it (its drain)

    def __post_init__(self) -> None:
        self.outcome.trace.on_try = self.trying

    def trying(self, candidate: Candidate) -> None:
        """A try is about to reach ``candidate``'s backend: the row as it would stand if the
        process died during it goes to the journal (``Accountant.trying``)."""
        if self.settled:
            return
        state = self.active.pool.get(candidate.backend)
        model = state.backend.model_id if state is not None else self.outcome.model
        self.tried = self.pipeline.accountant.trying(
            self.outcome, self.plan, self.active.policy.prices, candidate, model
        )

    @property
    def may_escalate(self) -> bool:
        """Whether a cascade may escalate: no budget, or one whose hold covers it."""
        return self.admission is None or self.admission.may_escalate

    async def whole(self, decision: Decision) -> Answer:
        assert self.chat is not None
        chat, outcome = self.chat, self.outcome
        with spent.noting() as self.spent:
            try:
                served = await cascading.complete(self, decision, chat)
            except DispatchError as exc:
                raise await self.refused(exc) from None
        self.served_by(served.candidate, served.trace)
        completion = served.completion
        more: tuple[Completion, ...] = ()
        if chat.n > 1:
            outcome.usage = completion.usage  # the first choice's call is spent, whatever follows
            try:
                with spent.noting() as self.spent:
                    more = await more_choices(
                        self.active.pool[served.candidate.backend],
                        chat,
                        chat.n - 1,
                        self.active.policy.timeouts.per_try_s,
                    )
            except BackendError as exc:
                outcome.status, outcome.error = 502, type(exc).__name__
                self.settle()
                await self.durable()
                error = BadGateway(
                    f"the first choice came, the other n-1 did not: {self.public(exc)}",
                    code="choices_failed",
                )
                raise Refused(error, self.receipt(served=True)) from None
            completion = dataclasses.replace(completion, usage=total_usage(completion, more))
        outcome.model = completion.model
        outcome.usage, outcome.timings = completion.usage, completion.timings
        if self.cache is not None:
            outcome.cache = self.cache.label(completion.usage.cached_tokens)
        self.succeed(completion)
        await self.durable()
        return Answer(completion, self.receipt(served=True, priced=True), more)

    async def stream(self, decision: Decision) -> Stream:
        assert self.chat is not None
        try:
            opened = await cascading.open_stream(self, decision, self.chat)
        except DispatchError as exc:
            raise await self.refused(exc) from None
        self.served_by(opened.candidate, opened.trace)
        self.outcome.model = opened.state.backend.model_id
        # Journaled as an interrupted row when its try began (``trying``): a crash mid-stream
        # leaves one. With journal_sync=full, it is on disk before the first byte.
        if self.tried is not None:
            try:
                await self.tried
            except asyncio.CancelledError:
                await opened.release()  # nobody will read it: the backend stops now
                raise
        return Stream(self, opened, self.chat)

    def from_cache(self, hit: CachedAnswer) -> Answer:
        """Answer from the response cache: no backend, cost 0, the saving recorded."""
        outcome = self.outcome
        completion = hit.completion((time.perf_counter() - outcome.started) * 1000.0)
        outcome.cache, outcome.cache_saved, outcome.made_by = "hit", hit.cost_usd, hit.backend
        outcome.tier, outcome.backend, outcome.model = hit.tier, "cache", hit.model
        outcome.usage, outcome.timings = completion.usage, completion.timings
        outcome.price(self.active.policy.prices, self.plan)
        self.settle()
        return Answer(completion, self.receipt(served=True, priced=True))

    def abandoned(self) -> None:
        """The request's task was cancelled before its answer was made: the client went away
        (``gateway.http.disconnect``), or the server ended it as it shut down (``Halt``: its
        receipt is left there for the edge's answer). Unless it already ended, account for it
        as a stream cut short is: status 499 (503 ``shutting_down`` when the server ended it),
        against the backend it reached last, with what its calls spent before they stopped
        where the backend said (an in-process model: exact), else estimated from what reached
        the gateway (the prompt; the provider may bill completion tokens nobody here saw)."""
        if self.halt.stopping:
            self.halt.receipt = self.receipt(served=False)
        if self.settled:
            return
        outcome = self.outcome
        outcome.status = 499
        self.halted()
        reported = self.spent.usages if self.spent is not None else []
        if outcome.usage is not None:  # n > 1: the first choice came, the other calls were cut
            unknown = outcome.choices - 1 - len(reported)
            guess = Usage(prompt_tokens=self.plan.prompt_tokens, estimated=True)
            outcome.usage = sum_usage([outcome.usage, *reported, *[guess] * unknown])
        elif reported:
            outcome.usage = sum_usage(reported)
        if outcome.trace.attempts and outcome.backend == "-":
            last = outcome.trace.attempts[-1]
            outcome.backend, outcome.tier = last.backend, last.tier
            state = self.active.pool.get(last.backend)
            if state is not None:
                outcome.model = state.backend.model_id
        self.settle()

    def halted(self) -> None:
        """A request cut short (abandoned, or a stream closed before its end) that the server
        ended as it shut down (``Halt``) says so in its row, unless it already ended: 503
        ``shutting_down``."""
        if self.halt.stopping and not self.settled:
            self.outcome.status, self.outcome.error = 503, SHUTTING_DOWN

    def served_by(self, candidate: Candidate, trace: Trace) -> None:
        self.outcome.trace = trace
        self.outcome.tier, self.outcome.backend = candidate.tier, candidate.backend

    def succeed(self, answer: Completion) -> None:
        """The success ending: price, keep the answer for the next identical request, account,
        and (after the answer is made: the client never waits for them) mirror to a canary and
        offer the answer to the adaptive scorer's judge."""
        priced = self.outcome.price(self.active.policy.prices, self.plan)
        if self.cache is not None:
            self.cache.keep(answer, self.outcome.tier, self.outcome.backend, priced.cost)
        self.settle()
        if self.shadow and self.chat is not None:
            job = shadow_job(self.outcome, self.chat, answer)
            self.pipeline.canary.mirror(self.active.policy, job)
        if self.pipeline.labels is not None:
            self.pipeline.labels.offer(self.active, self.plan, self.outcome, self.chat, answer)
        traced = tracing.current()
        if traced is not None and traced.content and self.chat is not None:
            spans.content(self.chat, answer)

    async def refused(self, exc: DispatchError) -> Refused:
        """Book a request no backend answered, durably: against the backend tried last (whose
        error it returns) and every tier it tried, in order ("cheap>strong"): a request that
        failed on several tiers is no failure of the last one alone."""
        outcome = self.outcome
        outcome.trace = Trace(exc.attempts, exc.skipped)
        if exc.attempts:
            outcome.backend, outcome.tier = exc.attempts[-1].backend, tiers_tried(exc.attempts)
        error = client_error(exc, outcome.rid)
        outcome.status, outcome.error = error.status, error.code
        self.settle()
        await self.durable()
        return Refused(error, self.receipt(served=False))

    def settle(self) -> None:
        """Account for the request: once, however it ended."""
        if not self.settled:
            self.settled = True
            outcome = self.outcome
            self.written = self.pipeline.accountant.finish(
                outcome, self.plan, self.active.policy.prices
            )
            governor, admission = self.pipeline.governor, self.admission
            if governor is not None and admission is not None and self.grant is not None:
                priced = outcome.priced
                usage = outcome.final_usage(self.plan)
                governor.release(
                    self.grant,
                    admission,
                    outcome.rid,
                    priced.cost if priced is not None else None,
                    usage.prompt_tokens + usage.completion_tokens,
                )

    def public(self, exc: BackendError) -> str:
        """A backend's error as a client may read it; the full text goes to the log."""
        text = public(exc.message)
        if text != exc.message:
            log.warning("backend_error", request_id=self.outcome.rid, detail=exc.message)
        return text

    async def durable(self) -> None:
        """Return once the request's row is on local disk (at once without a journal)."""
        if self.written is not None:
            await self.written

    def receipt(self, *, served: bool, priced: bool = False) -> Receipt:
        """What the client is told: the backend once one answered, the cost once priced."""
        outcome, price = self.outcome, self.outcome.priced if priced else None
        score = self.plan.score
        return Receipt(
            request_id=outcome.rid,
            policy=outcome.policy_hash,
            route=self.plan.decision.route,
            pinned=score is None and self.chat is not None,  # embeddings are never scored
            complexity=score.value if score is not None else None,
            tier=outcome.tier if served else None,
            backend=outcome.backend if served else None,
            fallbacks=outcome.trace.fallbacks if served else 0,
            cache=outcome.cache if served and self.cache is not None else None,
            cost=price.cost if price else None,
            baseline=price.baseline if price else None,
            cascade=outcome.cascade if served else None,
            limits=self.admission.headers if self.admission is not None else (),
            budget=outcome.budget,
        )

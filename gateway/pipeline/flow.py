"""The pipeline's flow: ``Pipeline.handle`` (chat) and ``Pipeline.embed`` (embeddings), each
one request's steps in order: plan, canary, governance gate (``gateway.pipeline.gate``), cache,
dispatch. The request on its way, and its one ending, is a ``Flight``
(``gateway.pipeline.flight``); a stream's events are in ``gateway.pipeline.stream``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from adapters.base import EmbeddingRequest
from gateway import tracing
from gateway.cache.request import prepare as prepare_cache
from gateway.cache.request import scope_of
from gateway.cache.service import CacheService
from gateway.canary.controller import CanaryController
from gateway.governance.gate import Governor
from gateway.governance.grants import Grant
from gateway.pipeline.answers import Answer, Embedded, Halt, Inbound, Receipt
from gateway.pipeline.backlog import check_backlog
from gateway.pipeline.flight import Flight
from gateway.pipeline.gate import admit
from gateway.pipeline.refusing import refusing
from gateway.pipeline.stream import Stream
from gateway.routing import spans
from gateway.routing.accounting import Accountant, Outcome
from gateway.routing.attempts import DispatchError
from gateway.routing.judging import LabelSampler
from gateway.routing.plan import make_plan, plan_embeddings
from gateway.routing.runtime import Runtime
from gateway.scoring.adaptive import owner_scope
from gateway.scoring.tokens import count_exact


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
        flight = Flight(self, active, chat, outcome, plan, None, routed.shadow)
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
                return Stream(flight, await flight.open_stream(decision), chat)
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
        flight = Flight(self, active, None, outcome, plan, None, shadow=False)
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

"""One request on its way through the pipeline (``Flight``): what the pipeline knows of it, and
its one ending. Every request is accounted (metrics, log line, ledger row, the governance gate's
release) exactly once, at ``Flight.settle``, however it ends: answered whole or from the cache,
refused, a stream at its end or when closed (``gateway.pipeline.stream``), or its call cancelled
before its answer (``abandoned``: the client went away, or the server ended it as it shut down).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from adapters import spent
from adapters.base import ChatRequest, Completion, Usage
from adapters.errors import BackendError
from adapters.spent import Spent
from gateway import tracing
from gateway.cache.request import RequestCache
from gateway.cache.service import CachedAnswer
from gateway.canary.controller import CanaryController
from gateway.canary.shadow import shadow_job
from gateway.errors import BadGateway
from gateway.governance.gate import Admission, Governor
from gateway.governance.grants import Grant
from gateway.pipeline.answers import SHUTTING_DOWN, Answer, Halt, Receipt, Refused
from gateway.policy import Candidate, Decision
from gateway.routing import cascade as cascading
from gateway.routing import spans
from gateway.routing.accounting import Accountant, Outcome
from gateway.routing.attempts import DispatchError, Trace, tiers_tried
from gateway.routing.choices import more_choices, sum_usage, total_usage
from gateway.routing.failures import client_error, public
from gateway.routing.judging import LabelSampler
from gateway.routing.opened import Opened
from gateway.routing.plan import Plan
from gateway.routing.runtime import Active

log = structlog.get_logger("tiergate.request")


class Services(Protocol):
    """What a flight uses of the pipeline's live services (``Pipeline`` has them)."""

    @property
    def accountant(self) -> Accountant: ...

    @property
    def canary(self) -> CanaryController: ...

    @property
    def governor(self) -> Governor | None: ...

    @property
    def labels(self) -> LabelSampler | None: ...


@dataclass(slots=True)
class Flight:
    """One request on its way: what the pipeline knows of it, and its one ending."""

    pipeline: Services
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

    async def open_stream(self, decision: Decision) -> Opened:
        """The stream's backend, its first chunk come and its row journaled as interrupted
        (the pipeline makes the ``Stream`` of it); raises ``Refused`` when none answered."""
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
        return opened

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

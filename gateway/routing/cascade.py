"""The confidence cascade: a tier with ``cascade:`` answers first; its answer's token log-probs
give a calibrated confidence (``gateway.scoring.confidence``); below the tier's
``min_confidence`` the same request goes to the route's next tier(s), whose answer is returned.

* The cheap call asks for log-probs even when the client did not; they are dropped again
  unless the client asked.
* Both calls are billed: the ``Verdict`` on the request's ``Outcome`` carries the discarded
  cheap answer, whose tokens and cost the ledger row adds to the final call's.
* A streamed request (``streamed: buffer``) is answered whole by the cheap tier first, then
  either replayed as a stream or the next tier's stream is opened: its time to first token
  becomes the cheap tier's whole generation time.
* One step only: the next tier's answer is final, whatever its own ``cascade:``. The cascade is
  skipped for pinned backends, ``n > 1``, and when the cheap tier failed over to another tier.
  When no tier above can take the request (or all of them fail), the cheap answer stands
  (``unescalated``).
* Under a budget, the escalation is paid for in advance: the governance gate reserves the cheap
  tier's worst case plus the tiers above's (``escalation``) when the budget has room for both,
  else only the cheap tier's, and then the flight says ``may_escalate`` False: an unsure answer
  stands (``unescalated``) rather than spend what was never reserved.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from adapters.base import ChatRequest, Chunk, Completion, ToolCallDelta
from gateway.policy import Candidate, Decision, Policy
from gateway.policy.cascade import Cascade
from gateway.routing.attempts import Attempt, DispatchError, Served, Trace
from gateway.routing.opened import Opened
from gateway.routing.plan import Plan
from gateway.scoring.confidence import token_logprobs

if TYPE_CHECKING:
    from gateway.routing.accounting import Outcome
    from gateway.routing.runtime import Active

CascadeDecision = Literal["kept", "escalated", "unescalated"]


class Flight(Protocol):
    """A request on its way (the pipeline's): where it runs, its plan, what is known of it."""

    active: Active
    plan: Plan
    outcome: Outcome

    @property
    def may_escalate(self) -> bool:
        """Whether what the request holds (its budget reservation) covers an escalation."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the cascade decided for one request."""

    decision: CascadeDecision  # unescalated: unsure, but no tier above could answer
    confidence: float  # calibrated P(the cheap answer is right), 0..1
    threshold: float  # the tier's min_confidence
    first: Completion  # the cheap tier's answer (returned unless escalated)
    attempts: tuple[Attempt, ...]  # every attempt of both calls, in order

    @property
    def spent(self) -> Completion | None:
        """The cheap answer when it was discarded: billed on top of the returned one."""
        return self.first if self.decision == "escalated" else None


def escalation(policy: Policy, decision: Decision, fits: Callable[[str], bool]) -> Decision | None:
    """Where the decision's cascade would escalate to: the route's tiers above its tier, their
    backends that ``fits`` the request; None when its tier has no cascade (or a pinned decision,
    or nothing above)."""
    if decision.pinned:
        return None
    tier = next((t for t in policy.tiers if t.name == decision.tier), None)
    if tier is None or tier.cascade is None:
        return None
    return _upward(policy, decision, fits)


def cascade_of(policy: Policy, decision: Decision, chat: ChatRequest) -> Cascade | None:
    """The cascade of the decision's tier, if it has one and it applies to this request."""
    if decision.pinned or chat.n > 1:
        return None
    tier = next((t for t in policy.tiers if t.name == decision.tier), None)
    return tier.cascade if tier is not None else None


async def complete(flight: Flight, decision: Decision, chat: ChatRequest) -> Served:
    """``Dispatcher.complete``, with the decision tier's cascade when it has one. Each call
    fills ``outcome.trace`` as it goes (the escalation a new one), so a request cancelled
    mid-way (the client went away) is accounted against the backends it reached."""
    active, outcome = flight.active, flight.outcome
    dispatcher = active.dispatcher
    cascade = cascade_of(active.policy, decision, chat)
    started = outcome.started
    if cascade is None:
        return await dispatcher.complete(decision, chat, arrived=started, trace=outcome.trace)
    first = await dispatcher.complete(decision, _asking(chat), arrived=started, trace=outcome.trace)
    up = _judge(active.policy, cascade, decision, flight, first)
    if up is None:
        return _as_asked(first, chat)
    outcome.trace = Trace(on_try=outcome.trace.on_try)
    try:
        better = await dispatcher.complete(up, chat, arrived=started, trace=outcome.trace)
    except DispatchError as exc:
        _unescalated(outcome, exc)
        return _as_asked(first, chat)
    except asyncio.CancelledError:
        _escalated(outcome, outcome.trace.attempts)
        raise
    _escalated(outcome, better.trace.attempts)
    return better


async def open_stream(flight: Flight, decision: Decision, chat: ChatRequest) -> Opened:
    """``Dispatcher.open_stream``, buffered through the cascade when the decision's tier has
    one with ``streamed: buffer``."""
    active, outcome = flight.active, flight.outcome
    dispatcher = active.dispatcher
    cascade = cascade_of(active.policy, decision, chat)
    started = outcome.started
    if cascade is None or not cascade.streamed:
        return await dispatcher.open_stream(decision, chat, arrived=started, trace=outcome.trace)
    first = await dispatcher.complete(decision, _asking(chat), arrived=started, trace=outcome.trace)
    up = _judge(active.policy, cascade, decision, flight, first)
    if up is not None:
        outcome.trace = Trace(on_try=outcome.trace.on_try)
        try:
            opened = await dispatcher.open_stream(up, chat, arrived=started, trace=outcome.trace)
        except DispatchError as exc:
            _unescalated(outcome, exc)
        except asyncio.CancelledError:
            _escalated(outcome, outcome.trace.attempts)
            raise
        else:
            _escalated(outcome, opened.trace.attempts)
            return opened
    answer = _as_asked(first, chat)
    state = active.pool[answer.candidate.backend]
    state.in_flight += 1  # released by the stream's end, as a live stream's would be
    head = Chunk(delta=answer.completion.text, thinking=answer.completion.thinking)
    return Opened(head, _rest(answer.completion), answer.candidate, state, answer.trace, 0.0)


def _judge(
    policy: Policy, cascade: Cascade, decision: Decision, flight: Flight, first: Served
) -> Decision | None:
    """Record the verdict on the cheap answer; the decision to escalate to, or ``None``."""
    if first.candidate.tier != decision.tier:
        return None  # the cheap tier failed and a fallback answered: nothing to judge
    outcome = flight.outcome
    confidence = cascade.calibration.confidence(token_logprobs(first.completion.logprobs))
    keep = cascade.keeps(confidence)
    up = None if keep or not flight.may_escalate else _upward(policy, decision, flight.plan.fits)
    outcome.cascade = Verdict(
        "kept" if keep else ("escalated" if up is not None else "unescalated"),
        round(confidence, 6),
        cascade.min_confidence,
        first.completion,
        tuple(first.trace.attempts),
    )
    return up


def _escalated(outcome: Outcome, attempts: list[Attempt]) -> None:
    verdict = outcome.cascade
    assert verdict is not None
    outcome.cascade = dataclasses.replace(verdict, attempts=(*verdict.attempts, *attempts))


def _unescalated(outcome: Outcome, exc: DispatchError) -> None:
    verdict = outcome.cascade
    assert verdict is not None
    attempts = (*verdict.attempts, *exc.attempts)
    outcome.cascade = dataclasses.replace(verdict, decision="unescalated", attempts=attempts)


def _upward(policy: Policy, decision: Decision, fits: Callable[[str], bool]) -> Decision | None:
    """The route's tiers above the decision's, their backends that can serve the request."""
    route = policy.routes.get(decision.route)
    if route is None or decision.tier not in route.tiers:
        return None
    above = route.tiers[route.tiers.index(decision.tier) + 1 :]
    candidates: list[Candidate] = []
    for name in above:
        for backend in policy.tier(name).backends:
            if fits(backend) and all(c.backend != backend for c in candidates):
                candidates.append(Candidate(backend, name))
    if not candidates:
        return None
    reason = f"cascade: tier {decision.tier!r} was unsure; escalated to {candidates[0].tier!r}"
    return Decision(decision.route, candidates[0].tier, tuple(candidates), False, (reason,))


def _asking(chat: ChatRequest) -> ChatRequest:
    """The request with token log-probs asked for (the confidence is read from them)."""
    return chat if chat.logprobs else dataclasses.replace(chat, logprobs=True)


def _as_asked(served: Served, chat: ChatRequest) -> Served:
    """The answer without the log-probs the client did not ask for."""
    if chat.logprobs or served.completion.logprobs is None:
        return served
    completion = dataclasses.replace(served.completion, logprobs=None)
    return Served(completion, served.candidate, served.trace)


async def _rest(completion: Completion) -> AsyncGenerator[Chunk, None]:
    """A buffered answer's chunks after its text: tool calls, then the end."""
    for index, call in enumerate(completion.tool_calls):
        yield Chunk(tool_calls=(ToolCallDelta(index, call.id, call.name, call.arguments),))
    yield Chunk(
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        timings=completion.timings,
        logprobs=completion.logprobs,
        stop_sequence=completion.stop_sequence,
    )

"""The canary's state and decisions: one controller per gateway process.

The state lives in the ledger database (``canary_events``): on start, and before every
evaluation, the controller reads the latest event of its canary (name + candidate), so a
restart resumes where the canary stood and every replica follows the decisions of the others
(and of ``tiergate canary promote|rollback``). A decision changes this process's routing at once
and is then recorded with the numbers behind it. Without a ledger the canary still routes, but
nothing is evaluated or kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.canary.arms import arm_figures
from gateway.canary.assign import sticky_key
from gateway.canary.counters import CanaryMetrics
from gateway.canary.events import (
    RESTARTABLE,
    Action,
    CanaryConflict,
    CanaryEvent,
    Status,
    Superseded,
    latest_event,
    recent_events,
    record_event,
    started_at,
    stood,
)
from gateway.canary.guardrails import Verdict, candidate_arm, evaluate
from gateway.canary.overlay import Routed, apply
from gateway.canary.shadow import ShadowJob, ShadowRunner
from gateway.ledger.entry import LedgerEntry
from gateway.policy import Decision, Policy
from gateway.policy.canary import CanarySpec
from gateway.policy.pin import pin_problem
from gateway.routing.runtime import Runtime

log = structlog.get_logger("tiergate.canary")


@dataclass(frozen=True, slots=True)
class Current:
    spec: CanarySpec
    status: Status
    started: datetime
    reason: str
    event_id: str  # the latest event this process knows of ("" when none was recorded)
    actor: str = "auto"


def _same(a: CanarySpec, b: CanarySpec) -> bool:
    return a.name == b.name and a.candidate == b.candidate


class CanaryController:
    def __init__(
        self,
        runtime: Runtime,
        metrics: CanaryMetrics,
        *,
        engine: Engine | None,
        record: Callable[[LedgerEntry], object] | None,
        flush: Callable[[], Awaitable[None]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._engine = engine
        self._flush = flush
        self._now = now
        self._current: Current | None = None
        self._lock = asyncio.Lock()
        self._last_ts: datetime | None = None
        self.last_verdict: Verdict | None = None
        self.shadow = ShadowRunner(metrics, record)
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> Current | None:
        return self._current

    # --- the request path (synchronous, cheap) --------------------------------------------------

    def route(
        self,
        policy: Policy,
        decision: Decision,
        *,
        key_id: str,
        user: str | None,
        headers: Mapping[str, str],
        rid: str,
        fits: Callable[[str], bool] = lambda _name: True,
    ) -> Routed:
        """The decision with the canary applied, and the request's arm. ``fits`` says whether
        a backend can serve this request at all (its capabilities): a request the candidate
        cannot serve takes no part in the canary."""
        spec, current = policy.canary, self._current
        if spec is None or current is None or not _same(spec, current.spec):
            return Routed(decision, None)  # no canary, or a new one not started yet
        if not fits(spec.candidate):
            return Routed(decision, None)
        sticky = sticky_key(spec.sticky, key_id=key_id, user=user, headers=headers)
        return apply(spec, current.status, decision, sticky=sticky, request_id=rid)

    def mirror(self, policy: Policy, job: ShadowJob) -> bool:
        """Send ``job`` to the candidate in the background (shadow mode)."""
        spec, current = policy.canary, self._current
        if spec is None or current is None or current.status not in ("running", "ready"):
            return False
        return self.shadow.submit(job, spec, self._runtime.active)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or begin) the canary's state, then evaluate it periodically."""
        try:
            await self.sync()
        except (SQLAlchemyError, OSError) as exc:
            log.error("canary_state_unreadable", error=str(exc).splitlines()[0][:300])
        self._task = asyncio.create_task(self._loop(), name="canary")

    async def aclose(self) -> None:
        """Stop evaluating (before the ledger it reads closes), then finish the shadows."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.shadow.aclose()

    async def _loop(self) -> None:
        while True:
            spec = self._runtime.active.policy.canary
            interval = spec.evaluate_every_s if spec is not None else 30.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._runtime.wait_for_change()
            try:
                await self.evaluate()
            except Exception as exc:  # the loop must survive a database outage
                log.warning("canary_evaluation_failed", error=f"{exc!r}"[:300])

    # --- state ---------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Adopt the policy's canary and the latest recorded decision about it."""
        spec = self._runtime.active.policy.canary
        if spec is None:
            self._current = None
            return
        current = self._current
        latest = await self._db(latest_event, spec.name, spec.candidate)
        if latest is None:
            if current is not None and _same(current.spec, spec) and not current.event_id:
                self._current = Current(spec, current.status, current.started, current.reason, "")
                return  # no ledger: the in-memory state is all there is
            await self._begin(spec)
            return
        if current is not None and _same(current.spec, spec) and current.event_id == latest.id:
            self._current = Current(
                spec, current.status, current.started, current.reason, latest.id, current.actor
            )
        else:
            since = await self._db(started_at, spec.name, spec.candidate) or latest.ts
            self._current = Current(
                spec, latest.status, since, latest.reason, latest.id, latest.actor
            )
            log.info("canary_state", canary=spec.name, status=latest.status, reason=latest.reason)
        if self._current.status == "paused" and self._current.actor == "auto":
            problem = await self._verify(spec)  # a pin that did not verify: try again
            if problem is None:
                await self._decide("start", "auto", "the candidate's pin verified", {})

    async def _begin(self, spec: CanarySpec) -> None:
        problem = await self._verify(spec)
        self._current = Current(spec, "running", self._now(), "starting", "")
        if problem is not None:
            await self._decide("pause", "auto", problem, {})
        else:
            reason = f"{spec.mode} at {spec.percent}% against tier {spec.tier!r}"
            await self._decide("start", "auto", reason, {"spec": spec.model_dump()})

    async def _verify(self, spec: CanarySpec) -> str | None:
        """Why the candidate may not run (its Ollama digest does not match), or None."""
        return await pin_problem(
            spec.pin.digest, self._runtime.active.policy.backends.get(spec.candidate)
        )

    async def _decide(
        self, action: Action, actor: str, reason: str, numbers: dict[str, Any]
    ) -> CanaryEvent:
        """Apply a decision in this process at once, then record it. Returns the decision that
        stands: this one, or the one another replica recorded first after the same event."""
        current = self._current
        assert current is not None
        now = self._now()
        if self._last_ts is not None and now <= self._last_ts:
            now = self._last_ts + timedelta(microseconds=1)  # keep events strictly ordered
        self._last_ts = now
        event = CanaryEvent(
            now,
            current.spec.name,
            current.spec.candidate,
            action,
            actor,
            reason,
            numbers,
            follows=current.event_id,
        )
        started = now if action == "start" else current.started
        self._current = Current(current.spec, event.status, started, reason, "", actor)
        if self._engine is not None:
            try:
                event = await asyncio.to_thread(record_event, self._engine, event)
            except Superseded as lost:
                return self._adopt(current, lost.winner, action)
            except SQLAlchemyError as exc:
                log.error("canary_event_unrecorded", error=str(exc).splitlines()[0][:300])
            else:
                self._current = Current(
                    current.spec, event.status, started, reason, event.id, actor
                )
        self._metrics.decisions.labels(current.spec.name, action).inc()
        log_at = log.warning if action in ("rollback", "pause") else log.info
        log_at(
            "canary_decision",
            canary=current.spec.name,
            candidate=current.spec.candidate,
            action=action,
            actor=actor,
            reason=reason,
        )
        return event

    def _adopt(self, before: Current, winner: CanaryEvent, wanted: Action) -> CanaryEvent:
        """Another replica (or an operator) decided first: its decision stands here too."""
        started = winner.ts if winner.action == "start" else before.started
        self._current = Current(
            before.spec, winner.status, started, winner.reason, winner.id, winner.actor
        )
        log.info(
            "canary_decision_superseded",
            canary=before.spec.name,
            candidate=before.spec.candidate,
            wanted=wanted,
            recorded=winner.action,
            by=winner.actor,
            reason=winner.reason,
        )
        return winner

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._engine is None:
            return None
        return await asyncio.to_thread(fn, self._engine, *args, **kwargs)

    # --- decisions -----------------------------------------------------------------------------

    async def evaluate(self) -> Verdict | None:
        """Check the guardrails now and act on the verdict; None when there is nothing to
        evaluate (no canary, no ledger, or a canary already decided)."""
        async with self._lock:
            await self.sync()
            current = self._current
            if current is None or self._engine is None:
                return None
            if current.status not in ("running", "ready"):
                return None
            if self._flush is not None:
                await self._flush()
            spec = current.spec
            figures = await self._db(arm_figures, since=current.started, candidate=spec.candidate)
            verdict = evaluate(spec, figures, started=current.started, now=self._now())
            self.last_verdict = verdict
            if verdict.outcome == "rollback":
                await self._decide("rollback", "auto", verdict.reason, verdict.numbers)
            elif verdict.outcome == "promote":
                await self._decide("promote", "auto", verdict.reason, verdict.numbers)
            elif verdict.outcome == "ready" and current.status == "running":
                await self._decide("ready", "auto", verdict.reason, verdict.numbers)
            return verdict

    async def promote(self, actor: str, reason: str = "") -> CanaryEvent:
        async with self._lock:
            await self.sync()
            current = self._require()
            if current.status not in ("running", "ready"):
                raise CanaryConflict(
                    f"canary {current.spec.name!r} is {current.status}: only a running or ready "
                    f"canary can be promoted (a rolled-back one: `tiergate canary restart` first)"
                )
            return stood(
                "promote",
                await self._decide(
                    "promote", actor, reason or f"promoted by hand ({actor})", await self._numbers()
                ),
            )

    async def rollback(self, actor: str, reason: str = "") -> CanaryEvent:
        async with self._lock:
            await self.sync()
            current = self._require()
            if current.status == "rolled_back":
                raise CanaryConflict(f"canary {current.spec.name!r} is already rolled back")
            return stood(
                "rollback",
                await self._decide(
                    "rollback",
                    actor,
                    reason or f"rolled back by hand ({actor})",
                    await self._numbers(),
                ),
            )

    async def restart(self, actor: str, reason: str = "") -> CanaryEvent:
        """Start a rolled-back (or paused) canary again, after its candidate was fixed: its
        guardrails count from now."""
        async with self._lock:
            await self.sync()
            current = self._require()
            if current.status not in RESTARTABLE:
                raise CanaryConflict(
                    f"canary {current.spec.name!r} is {current.status}: only a rolled-back or "
                    f"paused canary can be restarted"
                )
            problem = await self._verify(current.spec)
            if problem is not None:
                raise CanaryConflict(problem)
            spec = current.spec
            return stood(
                "start",
                await self._decide(
                    "start",
                    actor,
                    reason or f"restarted by hand ({actor})",
                    {"spec": spec.model_dump()},
                ),
            )

    def _require(self) -> Current:
        if self._current is None:
            raise CanaryConflict("the active policy has no canary: add a `canary:` block")
        return self._current

    async def _numbers(self) -> dict[str, Any]:
        current = self._current
        if current is None or self._engine is None:
            return {}
        if self._flush is not None:
            await self._flush()
        figures = await self._db(
            arm_figures, since=current.started, candidate=current.spec.candidate
        )
        return {"arms": {arm: f.as_dict() for arm, f in figures.items()}}

    async def status(self) -> dict[str, Any]:
        """The canary, its state, its figures per arm and its recent decisions."""
        async with self._lock:
            await self.sync()
        current = self._current
        if current is None:
            return {"canary": None}
        spec = current.spec
        numbers = await self._numbers()
        events = await self._db(recent_events, spec.name, spec.candidate, 20) or []
        verdict = self.last_verdict
        return {
            "canary": spec.name,
            "candidate": spec.candidate,
            "tier": spec.tier,
            "route": spec.route,
            "mode": spec.mode,
            "percent": spec.percent,
            "candidate_arm": candidate_arm(spec),
            "status": current.status,
            "since": current.started.isoformat(),
            "reason": current.reason,
            "arms": numbers.get("arms", {}),
            "last_verdict": None
            if verdict is None
            else {"outcome": verdict.outcome, "reason": verdict.reason},
            "shadow_pending": self.shadow.pending,
            "events": [e.as_dict() for e in events],
        }

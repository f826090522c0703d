"""Shadow calls: after the client has its answer, the same request goes to the candidate in
the background, and the two answers are compared.

Bounded: at most ``shadow.concurrency`` calls run and ``shadow.queue`` wait; beyond that a
shadow call is dropped (``tiergate_canary_shadow_total{outcome="dropped"}``) — the client's
request never waits for, and is never slowed by, the candidate. Each call is a ledger row with
``canary_arm = "shadow"`` and its ``quality`` (the comparison with the stable answer); its cost
is real and recorded, its baseline is not (it replaced nothing). The judge's calls are booked
the same way, with ``canary_arm = "judge"``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from adapters.base import ChatRequest, Completion
from adapters.errors import BackendError, BackendTimeout, BackendUnavailable
from gateway.canary.compare import compare
from gateway.canary.counters import CanaryMetrics
from gateway.ledger.entry import LedgerEntry
from gateway.policy.canary import CanarySpec
from gateway.routing.accounting import Outcome
from gateway.routing.background import Call, Jobs, Parent, background_entry
from gateway.routing.judge import RateLimit, judge_request, parse_grade
from gateway.routing.runtime import Active

log = structlog.get_logger("tiergate.canary")


@dataclass(frozen=True, slots=True)
class ShadowJob:
    parent_id: str
    request: ChatRequest
    stable_text: str
    stable_finish: str
    route: str
    tier: str
    key_id: str
    policy_hash: str
    team: str | None = None


class ShadowRunner:
    def __init__(
        self,
        metrics: CanaryMetrics,
        record: Callable[[LedgerEntry], object] | None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._metrics = metrics
        self._record = record
        self._rng = rng or random.Random()
        self._jobs = Jobs("shadow")
        self._spec: CanarySpec | None = None
        self._judge_limit = RateLimit(1)

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def submit(self, job: ShadowJob, spec: CanarySpec, active: Active) -> bool:
        """Start a shadow call in the background; False (and counted) when it was dropped."""
        if spec is not self._spec:
            self._spec = spec
            self._jobs.bound(spec.shadow.concurrency, spec.shadow.queue)
            judge = spec.shadow.judge
            self._judge_limit = RateLimit(judge.per_minute if judge else 1)
        if self._jobs.full:
            self._metrics.shadow.labels(spec.name, "dropped").inc()
            return False

        def failed(exc: Exception) -> None:
            self._metrics.shadow.labels(spec.name, "failed").inc()
            log.warning("canary_shadow_error", canary=spec.name, error=f"{exc!r}"[:300])

        self._jobs.spawn(lambda: self._shadow(job, spec, active), failed)
        return True

    async def drain(self) -> None:
        """Wait for the shadow calls under way (tests, shutdown)."""
        await self._jobs.drain()

    async def aclose(self) -> None:
        await self._jobs.aclose()

    async def _shadow(self, job: ShadowJob, spec: CanarySpec, active: Active) -> None:
        ts = datetime.now(UTC)
        started = time.perf_counter()
        completion: Completion | None = None
        error: BackendError | None = None
        state = active.pool.get(spec.candidate)
        if state is None or state.unavailable_reason() is not None:
            why = "not in the active policy" if state is None else state.unavailable_reason()
            error = BackendUnavailable(spec.candidate, str(why))
        else:
            state.in_flight += 1
            try:
                async with asyncio.timeout(spec.shadow.timeout_s):
                    completion = await state.backend.acomplete(job.request)
            except TimeoutError:
                error = BackendTimeout(spec.candidate, f"no answer in {spec.shadow.timeout_s} s")
            except BackendError as exc:
                error = exc
            finally:
                state.in_flight -= 1
        latency_ms = (time.perf_counter() - started) * 1000.0
        quality: float | None = None
        if completion is not None:
            grade = await self._judge(job, spec, active, completion.text)
            comparison = compare(
                job.stable_text,
                job.stable_finish,
                completion.text,
                completion.finish_reason,
                judge=grade,
            )
            quality = comparison.quality
            self._metrics.shadow.labels(spec.name, "compared").inc()
            log.info(
                "canary_shadow",
                canary=spec.name,
                request_id=job.parent_id,
                quality=quality,
                signals=list(comparison.signals),
                latency_ms=round(latency_ms, 2),
            )
        else:
            self._metrics.shadow.labels(spec.name, "failed").inc()
        if self._record is not None:
            call = Call(spec.candidate, "shadow", ts, latency_ms, completion, error)
            self._record(background_entry(active.policy, _parent(job), call, quality))

    async def _judge(
        self, job: ShadowJob, spec: CanarySpec, active: Active, answer: str
    ) -> float | None:
        judge = spec.shadow.judge
        if judge is None or self._rng.random() >= judge.sample or not answer.strip():
            return None
        state = active.pool.get(judge.backend)
        if state is None or state.unavailable_reason() is not None:
            return None
        if not self._judge_limit.acquire():
            self._metrics.shadow.labels(spec.name, "judge_rate_limited").inc()
            return None
        ts, started = datetime.now(UTC), time.perf_counter()
        graded: Completion | None = None
        error: BackendError | None = None
        try:
            async with asyncio.timeout(spec.shadow.timeout_s):
                graded = await state.backend.acomplete(
                    judge_request(job.request, job.stable_text, answer)
                )
        except TimeoutError:
            error = BackendTimeout(judge.backend, f"no answer in {spec.shadow.timeout_s} s")
        except BackendError as exc:
            error = exc
        if self._record is not None:  # the judge's calls cost money too: they are booked
            latency_ms = (time.perf_counter() - started) * 1000.0
            call = Call(judge.backend, "judge", ts, latency_ms, graded, error)
            self._record(background_entry(active.policy, _parent(job), call))
        if graded is None:
            log.warning("canary_judge_failed", canary=spec.name, error=str(error)[:200])
            return None
        return parse_grade(graded.text)


def shadow_job(outcome: Outcome, request: ChatRequest, answer: Completion) -> ShadowJob:
    """The shadow call for a request the stable backend has just answered."""
    return ShadowJob(
        parent_id=outcome.rid,
        request=request,
        stable_text=answer.text,
        stable_finish=answer.finish_reason,
        route=outcome.route,
        tier=outcome.tier,
        key_id=outcome.key_id,
        policy_hash=outcome.policy_hash,
        team=outcome.team,
    )


def _parent(job: ShadowJob) -> Parent:
    return Parent(job.key_id, job.policy_hash, job.route, job.tier, job.team)

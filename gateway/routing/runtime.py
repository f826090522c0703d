"""The gateway's live state: the active policy with its backend pool, and how it changes.

A reload (file change, SIGHUP or the admin call) validates the new file first; an invalid one
is rejected with its problems logged and the last good policy keeps serving. A valid one is
swapped in with a single assignment, so a request sees either the old or the new policy whole,
never a mix; backends the new policy dropped are closed once their requests have finished.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import Engine

from adapters import load_backend
from gateway.metrics import BREAKER_STATES, Metrics
from gateway.policy import Policy, PolicyError, load_policy
from gateway.policy.reload_check import check_reload
from gateway.routing.adaptive import AdaptiveLayer
from gateway.routing.dispatch import Dispatcher
from gateway.routing.pool import BackendFactory, BackendPool, BackendState, close_states, probe
from gateway.routing.retry import Retrier
from gateway.routing.tasks import cancel_all
from gateway.scoring.adaptive import AdaptiveSettings

log = structlog.get_logger("tiergate.runtime")


@dataclass(frozen=True, slots=True)
class Active:
    """One consistent view: a policy, the backends built for it, and (an adaptive policy's
    scorer) the labels it learns from, to pass to ``make_plan``."""

    policy: Policy
    pool: BackendPool
    dispatcher: Dispatcher
    adaptive: AdaptiveLayer | None = None


@dataclass(frozen=True, slots=True)
class ReloadResult:
    applied: bool
    trigger: str
    hash: str  # the hash serving after the attempt
    previous_hash: str
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "trigger": self.trigger,
            "hash": self.hash,
            "previous_hash": self.previous_hash,
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class LastReload:
    """The latest reload attempt, for ``/readyz``: while it is a rejected one, the file on disk
    is not the policy serving (``result.hash`` is)."""

    result: ReloadResult
    at: datetime

    @property
    def outcome(self) -> str:
        """applied, rejected (the last good policy keeps serving) or unchanged (the file is
        the policy serving)."""
        if self.result.applied:
            return "applied"
        return "rejected" if self.result.problems else "unchanged"


def log_disabled(pool: BackendPool) -> None:
    """A warning for each backend the policy names but the environment turns off (its key
    variable unset): it stays out of routing until a restart with the variable."""
    for state in pool.states():
        if state.disabled is not None:
            log.warning("backend_disabled", backend=state.name, detail=state.disabled)


class Runtime:
    def __init__(
        self,
        policy_path: Path,
        metrics: Metrics,
        *,
        factory: BackendFactory = load_backend,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = policy_path
        self._metrics = metrics
        self._factory = factory
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        policy = load_policy(policy_path)  # raises PolicyError: the server does not start
        pool = BackendPool.build(policy, factory=factory, clock=clock)
        log_disabled(pool)
        self._active = Active(policy, pool, self._dispatcher(policy, pool))
        self._adaptive: AdaptiveLayer | None = None
        self._last_reload: LastReload | None = None
        metrics.set_policy(policy.hash)
        metrics.policy_reload_ok.set(1)

    @property
    def active(self) -> Active:
        return self._active

    @property
    def policy_path(self) -> Path:
        return self._path

    @property
    def last_reload(self) -> LastReload | None:
        """The latest reload attempt since start (None: none yet)."""
        return self._last_reload

    def use_ledger(self, engine: Engine) -> None:
        """Keep the adaptive scorer's labels in step with the ledger database at ``engine``
        (before ``start``). Without it an adaptive policy scores with its base scorer."""
        self._adaptive = AdaptiveLayer(engine, clock=self._clock)
        self._active = self._with_adaptive(self._active.policy, self._active.pool)

    def _with_adaptive(self, policy: Policy, pool: BackendPool) -> Active:
        adaptive = self._adaptive if policy.adaptive is not None else None
        return Active(policy, pool, self._dispatcher(policy, pool), adaptive)

    def _dispatcher(self, policy: Policy, pool: BackendPool) -> Dispatcher:
        retrier = Retrier(policy.retries, self._clock)
        return Dispatcher(pool, policy.timeouts, self._clock, retrier)

    def _adaptive_settings(self) -> AdaptiveSettings | None:
        return self._active.policy.adaptive

    def start(self, *, watch: bool) -> None:
        """Begin prewarming, health probing, refreshing the adaptive scorer's labels and
        (optionally) watching the policy file."""
        self._active.pool.start_prewarm()
        self.spawn(self._health_loop(), "health")
        if self._adaptive is not None:
            self.spawn(self._adaptive.run(self._adaptive_settings), "adaptive-refresh")
        elif self._active.policy.adaptive is not None:
            log.warning(
                "adaptive_without_ledger",
                detail="the policy's scorer is adaptive but the ledger is off: scoring with its "
                "base scorer only; set TIERGATE_LEDGER=true to learn from feedback",
            )
        if watch:
            self.spawn(self._watch(), "policy-watch")

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            result = self._reload(trigger)
            self._last_reload = LastReload(result, datetime.now(UTC))
            # 0 while the file on disk was refused and an older policy serves (an alert's
            # condition: a counter of rejections stays up after the file is fixed).
            self._metrics.policy_reload_ok.set(0 if result.problems else 1)
            return result

    def _reload(self, trigger: str) -> ReloadResult:
        """Under ``_lock``: validate the file, then swap it in or keep the last good one."""
        old = self._active
        try:
            policy = load_policy(self._path)
        except PolicyError as exc:
            problems = tuple(str(exc).splitlines())
            log.error("policy_rejected", trigger=trigger, problems=list(problems))
            self._metrics.policy_reloads.labels("rejected", trigger).inc()
            return ReloadResult(False, trigger, old.policy.hash, old.policy.hash, problems)
        if policy.hash == old.policy.hash:
            self._metrics.policy_reloads.labels("unchanged", trigger).inc()
            log.info("policy_unchanged", trigger=trigger, hash=old.policy.hash)
            return ReloadResult(False, trigger, old.policy.hash, old.policy.hash)
        try:
            check_reload(policy, old.policy)
        except PolicyError as exc:
            problems = tuple(str(exc).splitlines())
            log.error("policy_rejected", trigger=trigger, problems=list(problems))
            self._metrics.policy_reloads.labels("rejected", trigger).inc()
            return ReloadResult(False, trigger, old.policy.hash, old.policy.hash, problems)
        try:
            pool = BackendPool.build(
                policy, previous=old.pool, factory=self._factory, clock=self._clock
            )
        except Exception as exc:  # a backend that cannot even be constructed
            log.error("policy_rejected", trigger=trigger, problems=[str(exc)])
            self._metrics.policy_reloads.labels("rejected", trigger).inc()
            return ReloadResult(False, trigger, old.policy.hash, old.policy.hash, (str(exc),))
        self._active = self._with_adaptive(policy, pool)
        log_disabled(pool)
        pool.start_prewarm()
        self._metrics.set_policy(policy.hash, old.policy.hash)
        self._metrics.policy_reloads.labels("applied", trigger).inc()
        log.info("policy_applied", trigger=trigger, hash=policy.hash, previous=old.policy.hash)
        retired = old.pool.dropped_by(pool)
        if retired:
            self.spawn(self._retire(retired, policy.timeouts.total_s), "retire")
        self._changed.set()
        self._changed = asyncio.Event()
        self.spawn(pool.probe_all(), "probe")
        return ReloadResult(True, trigger, policy.hash, old.policy.hash)

    async def wait_for_change(self) -> None:
        """Return once the active policy changes (callers bound it with asyncio.timeout)."""
        await self._changed.wait()

    async def aclose(self) -> None:
        await cancel_all(self._tasks)
        await self._active.pool.aclose()

    # --- background work -------------------------------------------------------------------

    def spawn(self, coro: object, name: str) -> None:
        """Run ``coro`` in the background, kept referenced and cancelled on close."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh_gauges(self) -> None:
        for state in self._active.pool.states():
            usable = state.is_up()
            self._metrics.backend_up.labels(state.name).set(1 if usable else 0)
            self._metrics.breaker.labels(state.name).set(BREAKER_STATES[state.breaker.state()])

    async def _health_loop(self) -> None:
        """Each backend's check on its own schedule: a slow or blackholed one (its check runs
        until ``HEALTH_TIMEOUT_S``) neither delays the others' nor stretches the interval."""
        probing: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                active = self._active
                try:
                    current = {id(s): s for s in active.pool.states() if s.disabled is None}
                    for key in [k for k, t in probing.items() if t.done() or k not in current]:
                        probing.pop(key).cancel()
                    for key, state in current.items():
                        if key not in probing:
                            probing[key] = asyncio.create_task(
                                probe(state), name=f"probe-{state.name}"
                            )
                    self.refresh_gauges()
                except Exception as exc:  # the loop must survive anything a probe does
                    log.warning("health_loop_error", error=str(exc))
                await asyncio.sleep(active.policy.health.interval_s)
        finally:
            for task in probing.values():
                task.cancel()

    def _watch_dirs(self) -> list[Path]:
        """The folder the policy's path names, not resolved: a Kubernetes ConfigMap volume
        updates by renaming a new ``..data`` symlink over the old one beside ``policy.yaml``
        (itself a symlink through ``..data``), and the timestamped folder the link resolved to
        is deleted. When the path is a symlink to a file in another folder, that one too."""
        here = self._path.absolute().parent
        there = self._path.resolve().parent
        return [here] if there == here or there.is_relative_to(here) else [here, there]

    def _fingerprint(self) -> tuple[str, int, int, int] | None:
        """The file the policy's path resolves to now, and its identity and size."""
        try:
            real = os.path.realpath(self._path)
            stat = os.stat(real)
        except OSError:
            return None
        return real, stat.st_ino, stat.st_mtime_ns, stat.st_size

    async def _watch(self) -> None:
        from watchfiles import awatch

        # Editors replace files rather than write them in place, so watch the directory.
        dirs = self._watch_dirs()
        changes_of = awatch(*dirs, debounce=200, recursive=False)
        pending = asyncio.ensure_future(anext(changes_of))
        await asyncio.sleep(0)  # its first step sets up the OS watches (RustNotify)
        log.info("policy_watch_started", dirs=[str(d) for d in dirs])
        seen = self._fingerprint()
        try:
            while True:
                changes = await pending
                now = self._fingerprint()
                named = any(Path(p).name == self._path.name for _, p in changes)
                if named or now != seen:  # the file itself, or what its symlinks lead to
                    await self.reload("file_change")
                seen = now
                pending = asyncio.ensure_future(anext(changes_of))
        finally:
            pending.cancel()

    async def _retire(self, states: list[BackendState], grace_s: float) -> None:
        """Close dropped backends once idle (or after the longest a request may take)."""
        deadline = self._clock() + grace_s
        # A counter polled here rather than an Event per backend: in_flight is touched by every
        # request, retirement happens once per reload.
        while any(s.in_flight for s in states) and self._clock() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await close_states(states)

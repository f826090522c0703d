"""The live backends of the active policy, with what the router needs to know about each:
health, warmth, breaker, and whether it is disabled by configuration.

On a policy reload the pool is rebuilt: backends whose configuration did not change are carried
over as they are (the tiny model is not reloaded, breakers keep their memory), new ones are
created and prewarmed, and dropped ones are closed once the swap is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from adapters import load_backend
from adapters.base import Backend, Health
from adapters.capabilities import Capabilities, effective
from adapters.config import BackendConfig, OpenAICompatConfig, RemoteConfig
from adapters.errors import BackendError
from gateway.policy import Policy
from gateway.routing.breaker import Breaker

log = structlog.get_logger("tiergate.pool")

HEALTH_TIMEOUT_S = 5.0
# A chat backend whose context window neither it nor the policy states is taken to hold this
# many tokens: refusing a prompt it might have held beats forwarding a prompt of any size to it.
# The policy says more with `capabilities: {context_window: N}`.
UNKNOWN_CONTEXT_WINDOW = 8192


@dataclass(slots=True, eq=False)
class BackendState:
    """One backend and the router's knowledge of it."""

    name: str
    config: BackendConfig
    backend: Backend
    breaker: Breaker
    disabled: str | None = None  # why it cannot be used, when configuration rules it out
    healthy: bool | None = None  # None: not probed yet
    health_detail: str = "not probed yet"
    warm: bool = False
    in_flight: int = 0
    prewarm_task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Held by a health check from asking to publishing, and by a prewarm publishing its end:
    # one check at a time, and a check's verdict never lands after a later one's.
    checking: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # (the backend's report, its window) → what the router uses: planned on every request,
    # recomputed only when the backend learns something (a probe, a model load).
    _caps: tuple[Capabilities, int | None, Capabilities] | None = field(default=None, repr=False)

    def capabilities(self) -> Capabilities:
        """What this backend serves: its report, the policy's overrides, and a chat backend
        whose window nobody states holds ``UNKNOWN_CONTEXT_WINDOW`` tokens."""
        reported, window = self.backend.capabilities, self.backend.context_window
        memo = self._caps
        if memo is not None and memo[1] == window and (memo[0] is reported or memo[0] == reported):
            return memo[2]
        caps = effective(self.backend, self.config)
        if caps.context_window is None and caps.chat:
            caps = dataclasses.replace(caps, context_window=UNKNOWN_CONTEXT_WINDOW)
        self._caps = (reported, window, caps)
        return caps

    def unavailable_reason(self) -> str | None:
        """Why the router should skip this backend now, or None if it may be tried."""
        if self.disabled is not None:
            return self.disabled
        return None  # unhealthy: its breaker lets trial traffic through (``mark``)

    def is_up(self) -> bool:
        """Enabled and not failing its health check (what readiness and the model list show;
        an unhealthy backend still gets trial requests, one at a time)."""
        return self.disabled is None and self.healthy is not False

    def mark(self, ok: bool, detail: str) -> None:
        """A health check's verdict (or a failed prewarm's). Unhealthy does not remove the
        backend: its breaker turns half-open, so one request at a time tries it."""
        self.healthy = ok
        self.health_detail = detail
        if ok:
            self.breaker.clear_suspicion()
        else:
            self.breaker.suspect()


def disabled_reason(config: BackendConfig) -> str | None:
    """Configuration that rules a backend out until the environment changes."""
    if not isinstance(config, RemoteConfig | OpenAICompatConfig) or not config.api_key_env:
        return None
    if os.environ.get(config.api_key_env):
        return None
    return f"disabled: set the environment variable {config.api_key_env} to enable it"


BackendFactory = Callable[[str, BackendConfig], Backend]


class BackendPool:
    """The backends of one policy version."""

    def __init__(self, states: Mapping[str, BackendState]) -> None:
        self._states = dict(states)

    @classmethod
    def build(
        cls,
        policy: Policy,
        previous: BackendPool | None = None,
        factory: BackendFactory = load_backend,
        clock: Callable[[], float] = time.monotonic,
    ) -> BackendPool:
        states: dict[str, BackendState] = {}
        for name, config in policy.backends.items():
            old = previous.get(name) if previous is not None else None
            if old is not None and old.config == config:
                old.disabled = disabled_reason(config)
                states[name] = old
                continue
            states[name] = BackendState(
                name=name,
                config=config,
                backend=factory(name, config),
                breaker=Breaker(policy.breaker.failures, policy.breaker.cooldown_s, clock),
                disabled=disabled_reason(config),
            )
        return cls(states)

    def get(self, name: str) -> BackendState | None:
        return self._states.get(name)

    def __getitem__(self, name: str) -> BackendState:
        return self._states[name]

    def states(self) -> Iterable[BackendState]:
        return self._states.values()

    def names(self) -> list[str]:
        return list(self._states)

    def capabilities(self, name: str) -> Capabilities:
        """What backend ``name`` can serve (an unknown name serves nothing)."""
        state = self._states.get(name)
        if state is None:
            return Capabilities(chat=False, streaming=False)
        return state.capabilities()

    def has_remote(self) -> bool:
        """Is a hosted-API (litellm) backend enabled?"""
        return any(s.config.type == "remote" and s.disabled is None for s in self._states.values())

    def dropped_by(self, newer: BackendPool) -> list[BackendState]:
        """States of this pool that ``newer`` does not carry over (to be closed)."""
        return [s for n, s in self._states.items() if newer.get(n) is not s]

    # --- lifecycle ------------------------------------------------------------------------

    def start_prewarm(self) -> None:
        """Prewarm every enabled backend in the background (the server starts meanwhile)."""
        for state in self._states.values():
            if state.disabled is None and state.prewarm_task is None and not state.warm:
                state.prewarm_task = asyncio.create_task(
                    _prewarm(state), name=f"prewarm-{state.name}"
                )

    async def probe_all(self) -> None:
        """Run every enabled backend's health check once, concurrently."""
        await asyncio.gather(
            *(probe(s) for s in self._states.values() if s.disabled is None),
        )

    async def aclose(self) -> None:
        await close_states(list(self._states.values()))


async def close_states(states: Iterable[BackendState]) -> None:
    """Stop prewarming and close each backend; one failing close does not stop the others."""
    for state in states:
        if state.prewarm_task is not None and not state.prewarm_task.done():
            state.prewarm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await state.prewarm_task
        try:
            await state.backend.aclose()
        except Exception as exc:
            log.warning("backend_close_failed", backend=state.name, error=str(exc))


async def _prewarm(state: BackendState) -> None:
    """Load the backend's model; then its health as it stands after the load (a check
    answered while it loaded says "loads on first request"), published under ``checking``:
    after any check in flight, never beside it, so one never answering holds up only this."""
    try:
        await state.backend.prewarm()
    except BackendError as exc:
        async with state.checking:
            state.mark(False, exc.message)
        log.warning("backend_prewarm_failed", backend=state.name, reason=exc.message)
        return
    except Exception as exc:  # an adapter bug must not kill the task silently
        async with state.checking:
            state.mark(False, f"prewarm failed unexpectedly: {type(exc).__name__}: {exc}")
        log.error("backend_prewarm_failed", backend=state.name, reason=state.health_detail)
        return
    state.warm = True
    if state.healthy is None:
        state.healthy = True
        state.health_detail = "prewarmed"
    log.info("backend_warm", backend=state.name)
    await probe(state)


async def probe(state: BackendState) -> None:
    """Run the backend's health check and publish its verdict, one check at a time."""
    async with state.checking:
        await _check(state)


async def _check(state: BackendState) -> None:
    try:
        health = await asyncio.wait_for(state.backend.health(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        health = Health(ok=False, detail=f"health check took longer than {HEALTH_TIMEOUT_S} s")
    except Exception as exc:  # a health check must never take the gateway down
        health = Health(ok=False, detail=f"health check failed: {exc}")
    was = state.healthy
    state.mark(health.ok, health.detail)
    if was is not health.ok:
        event = "backend_up" if health.ok else "backend_down"
        log.info(event, backend=state.name, detail=health.detail)
        task = state.prewarm_task
        if health.ok and not state.warm and task is not None and task.done():
            # It came up after a failed prewarm (e.g. `ollama serve` was started): warm it now.
            state.prewarm_task = asyncio.create_task(_prewarm(state))

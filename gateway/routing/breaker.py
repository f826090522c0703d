"""A circuit breaker per backend.

closed ──(N consecutive failures)──► open ──(cooldown elapsed)──► half-open
   ▲                                   ▲                              │
   └──────────(probe succeeds)─────────┼──────(probe fails)───────────┘

While open the backend is skipped; half-open lets exactly one request through as a probe.
A failed health check ``suspect``s the backend: half-open at once, so trial traffic (one
request at a time) still reaches it, and the first answer closes the breaker again; a backend
that stays down costs one failed try (and a fallback) per health interval, not an outage as
long as a probe interval after it is back. The clock is injectable so tests move time instead
of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    __slots__ = (
        "_clock",
        "_cooldown",
        "_failures",
        "_opened_at",
        "_probing",
        "_suspected",
        "_threshold",
    )

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._suspected = False

    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._cooldown - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open, only the first caller probes."""
        state = self.state()
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """The request that took the probe slot ended without a verdict (e.g. client left)."""
        self._probing = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False
        self._suspected = False

    def suspect(self) -> None:
        """A health check failed: half-open now (one trial request at a time)."""
        self._suspected = True
        if not self._probing:
            self._opened_at = self._clock() - self._cooldown

    def clear_suspicion(self) -> None:
        """A health check passed: close a breaker that only a failed check had opened (one
        opened by failed requests keeps its cooldown)."""
        if self._suspected and not self._probing and self._failures == 0:
            self._opened_at = None
        self._suspected = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
        self._probing = False

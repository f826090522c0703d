"""Retries on the same backend: which failures, how long to wait, and the budget that bounds them.

* **Which.** An upstream's 429 (``BackendRateLimited`` with a status; an in-process model's
  "busy" has none and falls to the next candidate at once) or a 5xx (``BackendUnavailable`` or
  ``BackendBadResponse`` whose ``status_code`` is 500 or more): the server is alive and said the
  failure is passing. Never a rejection (a 4xx fails the same way again), an unreachable server
  (no status: a refused connection rarely heals within milliseconds; the next candidate is a
  better use of the deadline) or a timeout (the try already spent ``per_try_s`` on a backend that
  is slow now; another try would spend it again).
* **How long.** The upstream's ``Retry-After`` when it gave one, else full-jitter exponential
  back-off, ``uniform(0, min(max_ms, base_ms × 2ⁿ))`` for the n-th retry (n from 0). A wait
  longer than ``max_ms``, or not shorter than what is left of the request's deadline, is not
  waited: the next candidate is tried at once. So a retry never sleeps past the deadline.
* **The budget** (Finagle's ``RetryBudget``, gRPC's retry throttling), one per backend: each first
  try on it deposits ``budget_ratio`` of a token (at most 100 tries' worth are kept), each retry
  spends one. Besides, ``min_per_s`` retries a second are allowed (unused ones kept for up to
  10 s) so a quiet gateway can retry too. Even when a backend fails every call, retries add at
  most ``budget_ratio`` of its first tries, plus that minimum. Per backend, so one failing
  upstream cannot spend the retries of the others; a policy reload starts the budgets afresh.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from adapters.errors import BackendBadResponse, BackendError, BackendRateLimited, BackendUnavailable
from gateway.policy.schema import RetrySpec

Reason = Literal["rate_limited", "server_error"]

DEPOSITS_KEPT = 100  # first tries whose deposits a budget keeps (a burst's worth of retries)
RESERVE_WINDOW_S = 10.0  # how long unused ``min_per_s`` retries are kept
_TOKEN = 1.0 - 1e-9  # a whole token, give or take float rounding (5 × 0.2 is not quite 1.0)


def retry_reason(error: BackendError) -> Reason | None:
    """Why ``error`` may be retried on the same backend, or None when it may not."""
    status = error.status_code
    if isinstance(error, BackendRateLimited):
        # An upstream's 429. An in-process model that is busy (its queue full; no status)
        # is not waited for: the next candidate serves at once.
        return "rate_limited" if status is not None else None
    if isinstance(error, BackendUnavailable | BackendBadResponse) and status and status >= 500:
        return "server_error"
    return None


class RetryBudget:
    """One backend's retry tokens: deposits from first tries, plus a reserve refilled at
    ``min_per_s`` (see the module docstring)."""

    __slots__ = ("_balance", "_cap", "_clock", "_min_per_s", "_ratio", "_refilled", "_reserve")

    def __init__(self, ratio: float, min_per_s: float, clock: Callable[[], float]) -> None:
        self._ratio = ratio
        self._cap = ratio * DEPOSITS_KEPT
        self._min_per_s = min_per_s
        self._clock = clock
        self._balance = 0.0
        self._reserve = min_per_s * RESERVE_WINDOW_S
        self._refilled = clock()

    def deposit(self) -> None:
        """A first try went to the backend."""
        self._balance = min(self._cap, self._balance + self._ratio)

    def withdraw(self) -> bool:
        """Spend a token for a retry; False (nothing spent) when there is none."""
        now = self._clock()
        reserve_cap = self._min_per_s * RESERVE_WINDOW_S
        self._reserve = min(reserve_cap, self._reserve + (now - self._refilled) * self._min_per_s)
        self._refilled = now
        if self._balance >= _TOKEN:
            self._balance -= 1.0
            return True
        if self._reserve >= _TOKEN:
            self._reserve -= 1.0
            return True
        return False


class Retrier:
    """The policy's ``retries``, the budgets per backend, and the waiting. ``sleep`` and
    ``uniform`` are injectable so tests record the waits instead of sleeping them."""

    __slots__ = ("_budgets", "_clock", "_sleep", "_uniform", "spec")

    def __init__(
        self,
        spec: RetrySpec,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._budgets: dict[str, RetryBudget] = {}

    def budget(self, backend: str) -> RetryBudget:
        budget = self._budgets.get(backend)
        if budget is None:
            budget = RetryBudget(self.spec.budget_ratio, self.spec.min_per_s, self._clock)
            self._budgets[backend] = budget
        return budget

    def first_try(self, backend: str) -> None:
        """A candidate's first try is about to go out: it pays into the backend's budget."""
        if self.spec.per_backend:
            self.budget(backend).deposit()

    def wait_s(
        self, backend: str, error: BackendError, retried: int, left_s: float
    ) -> float | None:
        """Seconds to wait before retrying ``backend`` after ``error`` (with ``retried``
        retries done and ``left_s`` left of the deadline), a token spent; None: move on."""
        spec = self.spec
        if retried >= spec.per_backend or retry_reason(error) is None:
            return None
        max_s = spec.max_ms / 1000.0
        told = error.retry_after if isinstance(error, BackendRateLimited) else None
        if told is not None:
            wait = told
        else:
            wait = self._uniform(0.0, min(max_s, spec.base_ms / 1000.0 * 2.0**retried))
        if wait > max_s or wait >= left_s:
            return None
        if not self.budget(backend).withdraw():
            return None
        return wait

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

"""Redis away from a governance store: why, when to try it again, and the log lines that say
where the store keeps its counts meanwhile.

A store asks ``usable()`` before each Redis call: yes while Redis answers and, during an outage,
again once ``retry_s`` has passed since the last failure (tried on the request path: no
background task, no sleeping). A failed call is ``went_away(exc)``: the first of an outage logs
``rate_limits_local`` (with ``reason``) and/or ``budgets_local`` (with ``error``, the exception's
type), for what the store keeps; later ones only put the next try off. A call that succeeds is
``back()``: after an outage it logs ``rate_limits_shared`` (with ``was``, the outage's reason)
and/or ``budgets_shared_again``.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

log = structlog.get_logger("tiergate.governance")


class Outage:
    """Whether one store's Redis is away, and since when to try it again. ``rates`` and
    ``budgets`` say what the store keeps in its own process while it is (each has its own log
    lines); ``clock`` gives the time the retry is due by."""

    __slots__ = ("_budgets", "_clock", "_rates", "_reason", "_retry_at", "_retry_s")

    def __init__(
        self, *, rates: bool, budgets: bool, retry_s: float, clock: Callable[[], float]
    ) -> None:
        self._rates = rates
        self._budgets = budgets
        self._retry_s = retry_s
        self._clock = clock
        self._reason: str | None = None  # why Redis is not used now; None: it is
        self._retry_at = 0.0

    @property
    def reason(self) -> str | None:
        """Why Redis is not used now (the first failure of the outage), or None while it is."""
        return self._reason

    def usable(self) -> bool:
        """Whether to ask Redis now (it answers, or it is time to try it again)."""
        return self._reason is None or self._clock() >= self._retry_at

    def went_away(self, exc: BaseException) -> None:
        """A call to Redis failed with ``exc``: the next try is ``retry_s`` from now, and the
        first failure of an outage says so in the log."""
        self._retry_at = self._clock() + self._retry_s
        if self._reason is not None:
            return
        self._reason = f"{type(exc).__name__}: {exc}"[:300]
        every = f"tried again every {self._retry_s:g} s"
        if self._rates:
            log.warning(
                "rate_limits_local",
                reason=self._reason,
                detail=f"Redis is unreachable: rate limits are per process until it answers "
                f"({every})",
            )
        if self._budgets:
            log.warning(
                "budgets_local",
                error=type(exc).__name__,
                detail=f"Redis unreachable: budgets are kept by each process until it answers "
                f"({every})",
            )

    def back(self) -> None:
        """A call to Redis succeeded: an outage, if there was one, is over and logged as such."""
        if self._reason is None:
            return
        if self._rates:
            log.info(
                "rate_limits_shared",
                detail="Redis answers again: rate limits are shared by every replica",
                was=self._reason,
            )
        if self._budgets:
            log.info("budgets_shared_again")
        self._reason = None

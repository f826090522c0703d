"""Rate limits per virtual key and per team: requests and tokens per minute.

``RateLimiter.admit`` is asked once per request, before it is routed, with the subjects the
request counts against (its key, the key's team) and the tokens it may use (prompt plus
``max_tokens``, or a cap). Every limit of every subject is checked — requests at a cost of 1,
tokens at that estimate — and the costs are added only when all of them fit: a request refused
by its team's limit takes nothing from its key's. The verdict carries OpenAI's rate-limit headers
for every answer (the tighter of key and team for each of requests and tokens) and, on a refusal,
``retry-after``. ``settle`` corrects the tokens once the real usage is known: more than the
estimate is added, less is given back.

The gateway with Redis (``TIERGATE_REDIS_URL``) does not ask this class for the shared
counters: ``remote.RemoteGate`` decides them with the budgets in one script call (same keys, same
arithmetic). A ``RateLimiter`` given a ``redis_url`` shares them alone, one script call per
admission (bench/rate_limits.py measures it).

When Redis fails (refused, timed out), one ``rate_limits_local`` warning is logged for the
outage, the limits are kept per process (``limits``' in-memory storage) and the request is
served; Redis is tried again on the request path every ``retry_s`` seconds (no background task,
no sleeping), and ``rate_limits_shared`` is logged when it answers again. While local, each
replica enforces the full limit on its own, so the fleet lets through up to a limit per replica;
the per-process counts are not merged back into Redis.

Redis keys hold only the subject kinds and ids (key ids and team ids, never a key itself):
``tiergate:rl:<kind>:<id>:<r|t>:<window number>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from gateway.governance.outage import Outage
from gateway.governance.rate_stores import LocalWindows, RedisWindows, WindowStore
from gateway.governance.windows import Check, Counts, fits, headers, wait_s

if TYPE_CHECKING:
    from gateway.settings import Settings

T = TypeVar("T")
PREFIX = "tiergate:rl:"


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests and tokens per minute; None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom a request counts against: a virtual key or a team, by id (never the secret)."""

    kind: Literal["key", "team"]
    id: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """``allowed``; when not, ``retry_after_s`` (None: waiting will not help, the request alone
    is over a tokens limit) and ``limited_by`` ("team:t-1:tokens"). ``headers`` go on the
    answer either way (``retry-after`` among them on a refusal)."""

    allowed: bool
    retry_after_s: float | None
    headers: tuple[tuple[str, str], ...]
    limited_by: str | None


ALLOWED = RateVerdict(True, None, (), None)


def checks_for(subjects: Sequence[Subject], tokens: int) -> list[Check]:
    out: list[Check] = []
    for subject in subjects:
        base = f"{subject.kind}:{subject.id}"
        if subject.limits.rpm is not None:
            out.append(Check(f"{base}:requests", f"{base}:r", "requests", subject.limits.rpm, 1))
        if subject.limits.tpm is not None:
            cost = max(0, tokens)
            out.append(Check(f"{base}:tokens", f"{base}:t", "tokens", subject.limits.tpm, cost))
    return out


def refusal(checks: Sequence[Check], counts: Sequence[Counts], window_s: float) -> RateVerdict:
    """The verdict for a request some limit had no room for: the limit that binds longest
    (``limited_by``), when to retry, and the headers."""
    limited_by: str | None = None
    retry: float | None = 0.0
    for check, count in zip(checks, counts, strict=True):
        if fits(check, count, window_s):
            continue
        wait = wait_s(check, count, window_s)
        if limited_by is None or wait is None or (retry is not None and wait > retry):
            limited_by = check.name
        retry = None if wait is None or retry is None else max(retry, wait)
    if limited_by is None:
        # every limit fitted by the time the counters were read back (a race with other
        # requests in this process): refuse this one, ask for a retry at once
        limited_by, retry = checks[0].name, 0.0
    return RateVerdict(False, retry, headers(checks, counts, window_s, retry), limited_by)


class RateLimiter:
    """The rate limits of one gateway process; Redis-shared when ``redis_url`` is given.

    ``window_s`` is the limits' window (a minute), ``timeout_s`` bounds each Redis reply,
    ``connect_timeout_s`` each new connection (set-up takes 10–40 ms on a busy machine; a refused
    connection fails at once whatever the bound), ``retry_s`` is how often Redis is tried again
    while it is away, ``clock`` gives the Redis windows' time (time.time; the in-process
    fallback keeps ``limits``' own clock), ``max_in_flight`` caps the Redis calls at once (a
    script call holds a connection ~0.1 ms, so 16 serve tens of thousands of admissions a
    second; more wait their turn).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = PREFIX,
        window_s: float = 60.0,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 16,
    ) -> None:
        self._window_s = window_s
        self._gate = asyncio.Semaphore(max_in_flight)
        self._local = LocalWindows(prefix)
        self._shared = (
            RedisWindows(
                redis_url,
                prefix=prefix,
                timeout_s=timeout_s,
                connect_timeout_s=max(timeout_s, connect_timeout_s),
                clock=clock,
            )
            if redis_url
            else None
        )
        self._outage = Outage(rates=True, budgets=False, retry_s=retry_s, clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        prefix: str = PREFIX,
        window_s: float = 60.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> RateLimiter:
        """Shared through ``TIERGATE_REDIS_URL`` when it is set, each call bounded by
        ``TIERGATE_GOVERNANCE_TIMEOUT_MS``; per process otherwise."""
        url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        return cls(
            url,
            prefix=prefix,
            window_s=window_s,
            timeout_s=settings.governance_timeout_ms / 1000,
            # a connection is made rarely, and a busy event loop can hold a connect's reply
            # past a tight bound: a burst would then read as an outage
            connect_timeout_s=max(2.0, settings.governance_timeout_ms / 1000),
            retry_s=retry_s,
            clock=clock,
        )

    @property
    def kind(self) -> Literal["redis", "memory"]:
        """Where the limits are meant to be kept: Redis (given a ``redis_url``) or here."""
        return "memory" if self._shared is None else "redis"

    def state(self) -> tuple[Literal["ok", "degraded"], str]:
        """For a readiness check: degraded while the limits are per process for want of Redis."""
        if self._shared is None:
            return "ok", "per process (no Redis configured)"
        if self._outage.reason is not None:
            return "degraded", f"per process while Redis is away: {self._outage.reason}"
        return "ok", "shared through Redis"

    async def admit(self, subjects: Sequence[Subject], tokens: int) -> RateVerdict:
        checks = checks_for(subjects, tokens)
        if not checks:
            return ALLOWED
        window_s = self._window_s
        allowed, counts = await self._on_store(lambda store: store.admit(checks, window_s))
        if allowed:
            return RateVerdict(True, None, headers(checks, counts, window_s, None), None)
        return refusal(checks, counts, window_s)

    async def settle(self, subjects: Sequence[Subject], estimated: int, actual: int) -> None:
        """Correct the tokens windows once the usage is known: ``actual - estimated`` is added
        (given back when negative, never below zero) to each subject's current tokens window.
        A window that has turned since the admission gets the correction instead (a give-back
        then frees at most the estimate early). Never raises for want of Redis."""
        await self.settle_many([(subjects, estimated, actual)])

    async def settle_many(self, items: Sequence[tuple[Sequence[Subject], int, int]]) -> None:
        """``settle`` for many requests in one call (one script call on Redis)."""
        changes = [
            (check, actual - estimated)
            for subjects, estimated, actual in items
            if actual != estimated
            for check in checks_for(subjects, 0)
            if check.dimension == "tokens"
        ]
        if changes:
            window_s = self._window_s
            await self._on_store(lambda store: store.adjust(changes, window_s))

    async def _on_store(self, op: Callable[[WindowStore], Awaitable[T]]) -> T:
        shared = self._shared
        if shared is not None and self._outage.usable():
            # a burst queues here rather than opening a connection per request at once (which
            # on a busy machine runs past the connect bound and reads as an outage)
            async with self._gate:
                if self._outage.usable():  # Redis may have gone away while this one queued
                    try:
                        result = await op(shared)
                    except shared.errors as exc:
                        self._outage.went_away(exc)
                    else:
                        self._outage.back()
                        return result
        return await op(self._local)

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
        await self._local.aclose()

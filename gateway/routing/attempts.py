"""What dispatching one request produced: each attempt on a backend and each candidate skipped
(the ``Trace`` the ledger and ``policy explain`` read), the answer and where it came from, or
the ``DispatchError`` when no candidate answered (``gateway.routing.dispatch`` makes them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.base import Completion, Embeddings
from adapters.errors import BackendError
from gateway.policy import Candidate


@dataclass(frozen=True, slots=True)
class Attempt:
    backend: str
    tier: str
    error: str | None  # the error's class name; None on success, or cut short by the client
    message: str | None
    latency_ms: float
    status: int | None = None  # the upstream's HTTP status, when it failed with one
    # Why this try re-sent the request to the backend of the try before it ("rate_limited",
    # "server_error"); None for a candidate's first try.
    retry: str | None = None


def tiers_tried(attempts: list[Attempt]) -> str:
    """The tiers of ``attempts`` in the order tried, each once ("cheap>strong"; a tier's
    backends, or a retry, tried in a row count once): what a request no tier answered is booked
    against."""
    tiers: list[str] = []
    for attempt in attempts:
        if attempt.tier not in tiers:
            tiers.append(attempt.tier)
    return ">".join(tiers)


@dataclass(frozen=True, slots=True)
class Skip:
    backend: str
    reason: str
    # Seconds until the backend may be tried again, when the gateway knows (an open breaker's
    # cooldown); None when it does not (disabled, unhealthy, not in the policy).
    retry_in_s: float | None = None


class DispatchError(Exception):
    """No candidate produced an answer."""

    def __init__(self, attempts: list[Attempt], skipped: list[Skip], last: BackendError | None):
        self.attempts = attempts
        self.skipped = skipped
        self.last = last
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [f"{a.backend}{' (retry)' if a.retry else ''}: {a.message}" for a in self.attempts]
        parts += [f"{s.backend}: skipped ({s.reason})" for s in self.skipped]
        if not parts:
            return "no backend to try"
        return "; ".join(parts)

    @property
    def all_rejected(self) -> bool:
        return bool(self.attempts) and all(a.error == "BackendRejected" for a in self.attempts)


@dataclass(slots=True)
class Trace:
    """What happened while dispatching one request."""

    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    # Told of each try just before it reaches its backend (the pipeline journals the request's
    # row as it would stand if the process died during the try); None: nobody listens.
    on_try: Callable[[Candidate], None] | None = None

    def trying(self, candidate: Candidate) -> None:
        if self.on_try is not None:
            self.on_try(candidate)

    @property
    def fallbacks(self) -> int:
        """How often the request moved on to another candidate (retries are not counted)."""
        return max(0, sum(a.retry is None for a in self.attempts) - 1)

    @property
    def retries(self) -> int:
        """Tries that re-sent the request to the same backend."""
        return sum(a.retry is not None for a in self.attempts)


@dataclass(slots=True)
class Served:
    """A successful non-streamed answer and where it came from."""

    completion: Completion
    candidate: Candidate
    trace: Trace


@dataclass(slots=True)
class Embedded:
    """A successful embeddings answer and where it came from."""

    embeddings: Embeddings
    candidate: Candidate
    trace: Trace

"""What goes into the pipeline and what comes out: the parsed request, the answer (whole or a
stream's events), the refusal, and the receipt that says what the gateway did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from adapters.base import ChatRequest, Chunk, Completion, Embeddings, FinishReason, Usage
from gateway.errors import GatewayError
from gateway.governance.grants import Grant
from gateway.routing import cascade as cascading

# The ledger's error class of a request the server ended as it shut down (its drain ran out).
SHUTTING_DOWN = "shutting_down"


@dataclass(slots=True)
class Halt:
    """The server ending one request as it shuts down (SIGTERM's drain ran out). The edge makes
    one per request and sets ``stopping`` just before it cancels the request's task; the
    pipeline, cut, accounts for the request so (503 ``shutting_down``, not the 499 of a client
    gone) and leaves the receipt of what it did in ``receipt``, for the edge's answer. Mutable,
    unlike the rest here: it is how the edge and the pipeline tell each other of the cut."""

    stopping: bool = False
    receipt: Receipt | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A chat or completion request as the edge parsed it."""

    chat: ChatRequest
    model: str | None  # the route or backend the client named; None: the default route
    stream: bool
    key_id: str = "-"
    # The client's request headers (case-insensitive): a canary may split traffic by one.
    headers: Mapping[str, str] = field(default_factory=dict)
    arrived: float | None = None  # time.perf_counter() at the edge: the deadline counts from it
    api: str = "chat"  # the wire format it came through (recorded in the ledger)
    grant: Grant | None = None  # the caller's key and its limits (None: no key, or admin)
    halt: Halt = field(default_factory=Halt)  # set when the server ends the request (its drain)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the gateway did with one request, as the client is told."""

    request_id: str
    policy: str
    route: str | None = None
    pinned: bool = False  # the client named a backend: no complexity score
    complexity: float | None = None
    tier: str | None = None
    backend: str | None = None
    fallbacks: int = 0
    cache: str | None = None  # off | miss | hit | prefix:<tokens>, once a backend answered
    cost: Decimal | None = None
    baseline: Decimal | None = None
    cascade: cascading.Verdict | None = None  # a cascading tier answered first: kept or not
    limits: tuple[tuple[str, str], ...] = ()  # the caller's rate-limit headers (OpenAI's names)
    budget: str | None = None  # stepped-down: a budget moved it to a cheaper tier


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: ``completion`` (its usage counts every choice) and ``more`` choices."""

    completion: Completion
    receipt: Receipt
    more: tuple[Completion, ...] = ()


@dataclass(frozen=True, slots=True)
class Ended:
    """A stream's last event: each choice's finish reason and the usage of every call;
    ``stop_sequences`` the stop string that ended each choice, where its backend said."""

    finish: tuple[FinishReason, ...]
    usage: Usage
    stop_sequences: tuple[str | None, ...] = ()


@dataclass(frozen=True, slots=True)
class Broke:
    """The backend failed after the stream started; what came before stands, incomplete."""

    message: str  # the backend's error


StreamEvent = tuple[int, Chunk] | Ended | Broke


class Refused(Exception):
    """A request the pipeline could not answer: the error for the client, and the receipt."""

    def __init__(self, error: GatewayError, receipt: Receipt) -> None:
        super().__init__(error.message)
        self.error = error
        self.receipt = receipt


@dataclass(frozen=True, slots=True)
class Embedded:
    """An embeddings answer and its receipt."""

    embeddings: Embeddings
    receipt: Receipt

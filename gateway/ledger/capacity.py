"""The outbox's bound: how full the local outbox may get while the ledger database is away.

Rows wait in the outbox (``gateway.ledger.outbox``) for as long as the database does not answer;
unbounded, a long outage fills the disk (a Kubernetes pod is evicted when its emptyDir passes
its ``sizeLimit``, and every row in it is lost). So the outbox has a bound in bytes
(``TIERGATE_OUTBOX_MAX_BYTES``):

- at ``WARN_RATIO`` of it: one warning, ``ledger_outbox_filling`` (again only after it fell
  back below);
- at the bound: the outbox is *full*. The gateway admits no new request that would need a row
  (503 ``ledger_outbox_full``, ``gateway.pipeline.backlog``) and ``/readyz`` says unavailable, so
  a load balancer sends the traffic to replicas that can keep its rows. Requests already in
  flight still write theirs: the bound is soft for them, a few rows past it, never one lost;
- once the database answers, the replay takes rows out and the gateway admits again by itself
  (``ledger_outbox_admitting``).

``OutboxGauge`` follows the outbox's measures (taken by the writer after each operation) on the
event loop; the request path reads ``full`` from it, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import structlog

from gateway.metrics import Metrics

log = structlog.get_logger("tiergate.ledger")

WARN_RATIO = 0.8
MIN_BYTES = 64 * 1024  # an empty outbox file takes ~20 KiB (its tables and indexes)
DEFAULT_MAX_BYTES = 512 * 1024 * 1024  # half the shipped Kubernetes emptyDir (1 GiB)
RETRY_AFTER_S = 5.0

OutboxState = Literal["ok", "filling", "full"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
SIZE_FORMS = "a number of bytes or a size such as 512MiB, 1GiB, 900MB or 512Mi"


def parse_size(value: str) -> int:
    """Bytes in ``value``: a plain count, or one with a unit (``KiB``/``MiB``/``GiB`` and
    Kubernetes' ``Ki``/``Mi``/``Gi`` are powers of 1024; ``KB``/``MB``/``GB`` of 1000)."""
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a size; use {SIZE_FORMS}")
    return int(match.group(1)) * _UNITS[unit]


def human(size: int) -> str:
    """``size`` bytes, as a person would say it (MiB with one decimal from 1 MiB up)."""
    if size >= 1024**2:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024:.1f} KiB"


@dataclass(frozen=True, slots=True)
class OutboxBound:
    """At ``max_bytes`` in use the outbox is full; ``warn_ratio`` of it is worth a warning."""

    max_bytes: int
    warn_ratio: float = WARN_RATIO

    def state(self, used_bytes: int) -> OutboxState:
        if used_bytes >= self.max_bytes:
            return "full"
        if used_bytes >= self.max_bytes * self.warn_ratio:
            return "filling"
        return "ok"


@dataclass(frozen=True, slots=True)
class OutboxReading:
    """The outbox as last measured: for ``/readyz``."""

    state: OutboxState
    rows: int
    used_bytes: int
    max_bytes: int | None  # None: no bound
    rejected: int = 0  # rows the database refused, kept for a person (``tiergate outbox``)


class OutboxGauge:
    """The outbox's state against its bound, its gauges, and the log lines when it changes."""

    def __init__(self, bound: OutboxBound | None, metrics: Metrics | None = None) -> None:
        self._bound = bound
        self._metrics = metrics
        self._state: OutboxState = "ok"
        self._rows = 0
        self._rejected = 0
        self._bytes = 0
        if metrics is not None and bound is not None:
            metrics.ledger_outbox_limit.set(bound.max_bytes)

    @property
    def full(self) -> bool:
        """No new request may be admitted: its row could only go to a full outbox."""
        return self._state == "full"

    def reading(self) -> OutboxReading:
        max_bytes = self._bound.max_bytes if self._bound is not None else None
        return OutboxReading(self._state, self._rows, self._bytes, max_bytes, self._rejected)

    def observe(self, rows: int, used_bytes: int, rejected: int = 0) -> None:
        """The outbox now holds ``rows`` waiting and ``rejected`` refused rows in
        ``used_bytes``."""
        self._rows, self._bytes, self._rejected = rows, used_bytes, rejected
        if self._metrics is not None:
            self._metrics.ledger_outbox.set(rows)
            self._metrics.ledger_outbox_bytes.set(used_bytes)
            self._metrics.ledger_outbox_rejected.set(rejected)
        if self._bound is None:
            return
        state = self._bound.state(used_bytes)
        before, self._state = self._state, state
        if state == before:
            return
        figures = {
            "rows": rows,
            "rejected_rows": rejected,
            "used": human(used_bytes),
            "max": human(self._bound.max_bytes),
        }
        if state == "full":
            log.error(
                "ledger_outbox_full",
                **figures,
                detail="the local outbox reached TIERGATE_OUTBOX_MAX_BYTES: new requests get 503 "
                "ledger_outbox_full and /readyz says unavailable until it drains (requests in "
                "flight keep their rows); "
                + (
                    f"{rejected} of its rows are ones the ledger database refused, which no "
                    "replay takes out: see them with `tiergate outbox list`, then retry or drop "
                    "them (`tiergate outbox retry|drop`)"
                    if rejected
                    else "the ledger database is unreachable: it drains once it answers"
                ),
            )
        elif before == "full":
            log.info("ledger_outbox_admitting", **figures, detail="below its bound again")
        elif state == "filling":
            log.warning(
                "ledger_outbox_filling",
                **figures,
                detail=f"the outbox passed {self._bound.warn_ratio:.0%} of "
                "TIERGATE_OUTBOX_MAX_BYTES while the ledger database is unreachable; at the "
                "bound the gateway stops admitting requests",
            )

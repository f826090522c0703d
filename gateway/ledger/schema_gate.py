"""The ledger schema as the writer knows it, for a gateway that started while the database did
not answer (its schema unchecked): the writer inserts nothing until the database answers and
the same check as at start says this gateway may use the schema (at its head, or ahead and
compatible). Until then rows wait in the outbox — not set aside as refused — and the check
repeats every ``retry_s``: once `tiergate db upgrade` has run, the outbox drains by itself.

A gateway whose start-up check passed never checks again (a start-up that found the schema
unusable refused to start)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from gateway.ledger.schema_compat import SchemaState

log = structlog.get_logger("tiergate.ledger")

# Runs the check on a worker thread, bounded like an insert (``Reachability.within``).
Runner = Callable[[Callable[[], SchemaState]], Awaitable[SchemaState]]


class SchemaGate:
    def __init__(
        self,
        state: SchemaState | None,
        check: Callable[[], SchemaState] | None,
        *,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._check = check
        self._retry_s = retry_s
        self._clock = clock
        self._next = 0.0  # the next check, no earlier than this
        self._said: SchemaState | None = None  # the unusable state last logged

    @property
    def state(self) -> SchemaState | None:
        """The schema's state: None while unchecked (the database has not answered yet)."""
        return self._state

    @property
    def open(self) -> bool:
        """Whether rows may be inserted: the schema is usable, or nothing checks it."""
        return self._check is None or (self._state is not None and self._state.usable)

    async def ready(self, run: Runner) -> bool:
        """Whether rows may be inserted now; checks the schema (through ``run``) at most once
        per ``retry_s`` while it is not known usable. A database that does not answer raises
        what the check raised (the writer's "database down")."""
        if self.open:
            return True
        if self._clock() < self._next:
            return False
        self._next = self._clock() + self._retry_s
        assert self._check is not None
        state = await run(self._check)
        self._state = state
        if state.usable:
            log.info("ledger_schema_checked", schema=str(state.verdict), detail=state.describe())
            return True
        if state != self._said:
            self._said = state
            log.error(
                "ledger_schema_unusable",
                schema=str(state.verdict),
                detail=f"{state.describe()}; rows wait in the local outbox, and are written "
                f"once the schema is right (checked again every {self._retry_s:g} s)",
            )
        return False

"""Whether this gateway may use the ledger schema it finds: at its own Alembic head, behind it
(run the migrations), or ahead of it (a newer image migrated first: the middle of a rolling
update, or after a rollback).

Code cannot know the revisions written after it, so the database says it: each migration
declares ``oldest_code``, the oldest code revision that still reads and writes the schema it
leaves (its own revision for a change older code cannot live with; an earlier one for an
additive change: new nullable columns, tables, indexes), and the migrations record it in
``ledger_schema_compat`` (one row: the revision and its ``oldest_code``). A gateway at head R
accepts a database ahead of it when that row names R or a revision before R."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, inspect, text

COMPAT_TABLE = "ledger_schema_compat"


class SchemaVerdict(StrEnum):
    AT_HEAD = "at_head"
    EMPTY = "empty"  # no schema yet
    BEHIND = "behind"
    AHEAD_COMPATIBLE = "ahead_compatible"
    AHEAD_INCOMPATIBLE = "ahead_incompatible"


@dataclass(frozen=True, slots=True)
class SchemaState:
    """The database's revision against this code's head, and what that means."""

    verdict: SchemaVerdict
    database: str | None  # the database's Alembic revision (None: no schema)
    code: str  # this gateway's head
    oldest_code: str | None = None  # what the database records as the oldest code it takes

    @property
    def usable(self) -> bool:
        """Whether this gateway may read and write the schema as it is."""
        return self.verdict in (SchemaVerdict.AT_HEAD, SchemaVerdict.AHEAD_COMPATIBLE)

    def describe(self) -> str:
        """One line: where the schema stands and, where the gateway cannot use it, what to do."""
        at, head = self.database or "none", self.code
        if self.verdict is SchemaVerdict.AT_HEAD:
            return f"the ledger schema is at {head}, this gateway's revision"
        if self.verdict is SchemaVerdict.AHEAD_COMPATIBLE:
            return (
                f"the ledger schema is at {at}, newer than this gateway ({head}), and compatible "
                f"with it (it records {self.oldest_code} as the oldest revision it takes)"
            )
        if self.verdict in (SchemaVerdict.EMPTY, SchemaVerdict.BEHIND):
            return (
                f"the ledger database is at revision {at}, this gateway needs {head}: run "
                f"`tiergate db upgrade` (with the same TIERGATE_DATABASE_URL)"
            )
        recorded = (
            f"it takes code from {self.oldest_code} on"
            if self.oldest_code
            else "it records no older code it takes"
        )
        return (
            f"the ledger database is at revision {at}, newer than this gateway ({head}), and "
            f"{recorded}: run the newer tiergate image, or bring the schema back with it: "
            f"`tiergate db downgrade {head}` (run by the newer image, same TIERGATE_DATABASE_URL)"
        )


def decide(database: str | None, oldest_code: str | None, chain: Sequence[str]) -> SchemaState:
    """The state of a database at revision ``database`` (its recorded ``oldest_code``) for code
    whose revisions, oldest first, are ``chain`` (its head last)."""
    head = chain[-1]
    if database == head:
        return SchemaState(SchemaVerdict.AT_HEAD, database, head, oldest_code)
    if database is None:
        return SchemaState(SchemaVerdict.EMPTY, None, head)
    if database in chain:
        return SchemaState(SchemaVerdict.BEHIND, database, head, oldest_code)
    # Unknown here: a newer gateway's revision. Usable when it says code at `head` (or older,
    # which this code's own chain knows) still reads and writes it.
    verdict = (
        SchemaVerdict.AHEAD_COMPATIBLE
        if oldest_code is not None and oldest_code in chain
        else SchemaVerdict.AHEAD_INCOMPATIBLE
    )
    return SchemaState(verdict, database, head, oldest_code)


def read_oldest_code(connection: Connection, revision: str) -> str | None:
    """The oldest code revision the schema at ``revision`` records it takes (None: no record,
    as before 0012)."""
    if not inspect(connection).has_table(COMPAT_TABLE):
        return None
    row = connection.execute(
        text(f"SELECT oldest_code FROM {COMPAT_TABLE} WHERE revision = :r"), {"r": revision}
    ).first()
    return str(row[0]) if row is not None else None


def write_oldest_code(connection: Connection, revision: str, oldest_code: str) -> None:
    """Record ``oldest_code`` for the schema now at ``revision`` (the only row; idempotent)."""
    connection.execute(text(f"DELETE FROM {COMPAT_TABLE}"))
    connection.execute(
        text(f"INSERT INTO {COMPAT_TABLE} (revision, oldest_code) VALUES (:r, :o)"),
        {"r": revision, "o": oldest_code},
    )

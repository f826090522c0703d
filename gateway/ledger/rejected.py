"""Retrying the rows the database refused, once a person has fixed why.

The writer sets a row aside (the outbox's ``rejected`` table) when the database refuses it for
its content: a value out of a column's range, a constraint. No replay takes it out, since the
same row would be refused the same way; it waits, counting toward the outbox's bound, for
``tiergate outbox retry`` after the cause is fixed (a migration, a dropped constraint).

``retry`` inserts them the way the writer does (idempotently: an id already in the ledger is
skipped), a batch at a time, and a batch refused for its data one row at a time: the rows the
database takes leave the table, the others stay with its new answer. A database that does not
answer stops the retry (``RetryInterrupted``) with what was done so far kept. The rows come as
an iterable (``Outbox.iter_rejected``: a page at a time) and the refused ones are reported as
they are found, never all held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError

from gateway.ledger.outbox import Outbox, RejectedRow
from gateway.ledger.store import insert_batch

# The database refused these rows (not the connection): retrying them as they are cannot help.
ROW_ERRORS = (DataError, IntegrityError)
BATCH = 500


def first_line(exc: BaseException) -> str:
    """The database's answer, its first line (the next ones can quote the row's values)."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


@dataclass(slots=True)
class RetryOutcome:
    """Rows stored in the ledger (and gone from the table), and those refused again."""

    stored: int = 0
    refused: int = 0


Refused = Callable[[str, str], None]  # a row refused again: its id, the database's new error


class RetryInterrupted(Exception):
    """The database stopped answering mid-retry; ``outcome`` is what was done before."""

    def __init__(self, outcome: RetryOutcome, cause: BaseException) -> None:
        super().__init__(first_line(cause))
        self.outcome = outcome


def retry(
    outbox: Outbox, engine: Engine, rows: Iterable[RejectedRow], on_refused: Refused
) -> RetryOutcome:
    """Insert ``rows`` into the ledger; those it takes leave the rejected table, those it
    refuses again stay (with the new error) and go to ``on_refused``."""
    outcome = RetryOutcome()
    remaining = iter(rows)
    while chunk := list(islice(remaining, BATCH)):
        try:
            insert_batch(engine, [row.entry() for row in chunk])
        except (*ROW_ERRORS, ValueError, TypeError, KeyError):
            # Refused for its data, or a row that cannot be read back: find which, row by row.
            _one_by_one(outbox, engine, chunk, outcome, on_refused)
        except Exception as exc:  # unreachable, or not the schema this tiergate writes
            raise RetryInterrupted(outcome, exc) from exc
        else:
            outbox.settle_rejected(chunk)
            outcome.stored += len(chunk)
    return outcome


def _one_by_one(
    outbox: Outbox,
    engine: Engine,
    rows: Sequence[RejectedRow],
    outcome: RetryOutcome,
    on_refused: Refused,
) -> None:
    for row in rows:
        try:
            insert_batch(engine, [row.entry()])
        except ROW_ERRORS as exc:
            error = first_line(exc)
        except (ValueError, TypeError, KeyError) as exc:
            error = f"the row cannot be read back: {first_line(exc)}"
        except Exception as exc:
            raise RetryInterrupted(outcome, exc) from exc
        else:
            outbox.settle_rejected([row])
            outcome.stored += 1
            continue
        outbox.rerejected(row, error)
        outcome.refused += 1
        on_refused(row.id, error)

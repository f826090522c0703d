"""Writing ledger rows: batched, idempotent (a row whose id is already there is skipped).

One ``INSERT … ON CONFLICT (id) DO NOTHING`` per batch: on SQLite multi-row VALUES per chunk, on
PostgreSQL ``unnest`` of one array per column (a single statement, as the rollups' trigger needs:
see below). Measured by ``bench/ledger_writer.py``: a multi-VALUES statement built by SQLAlchemy
per batch is 20x slower (it compiles it anew each time), and ``dataclasses.asdict`` for the
parameters took three quarters of the CPU (it deep-copies every value); a plain attribute read is
enough, as every field of a ``LedgerEntry`` is immutable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import fields
from functools import cache
from typing import Any

from sqlalchemy import Engine, Float, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from gateway.ledger.adaptive import insert_samples
from gateway.ledger.entry import LedgerEntry, SampledEntry
from gateway.ledger.models import AdaptiveSampleRow, RequestRow
from gateway.scoring.adaptive import owner_scope

_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerEntry))
# Text columns and their lengths. PostgreSQL refuses a longer value, and with it the whole batch
# (again at every replay from the outbox), so a long model name from an upstream or a long key id
# is cut to fit rather than keeping every row of its batch out of the ledger.
_LIMITS: tuple[tuple[str, int], ...] = tuple(
    (column.name, column.type.length)
    for column in RequestRow.__table__.columns
    if isinstance(column.type, String) and column.type.length
)


def _row(entry: LedgerEntry) -> dict[str, Any]:
    """The entry's fields by name (without ``dataclasses.asdict``'s deep copies),
    text cut to its column's length."""
    row = {name: getattr(entry, name) for name in _FIELDS}
    for name, limit in _LIMITS:
        value = row[name]
        if value is not None and len(value) > limit:
            row[name] = value[:limit]
    return row


def insert_batch(engine: Engine, entries: Sequence[LedgerEntry]) -> None:
    """Insert ``entries`` in one transaction; ids already present are left as they are. The
    adaptive scorer's samples among them go to ``adaptive_samples`` in the same transaction."""
    if not entries:
        return
    if engine.dialect.name == "sqlite":
        _sqlite_insert(engine, entries)
        return
    if engine.dialect.name != "postgresql":
        raise ValueError(
            f"unsupported ledger database {engine.dialect.name!r}: use SQLite or PostgreSQL"
        )
    rows = [_row(e) for e in entries]
    sql = _postgresql_sql()
    with engine.begin() as connection:
        connection.exec_driver_sql(sql, _arrays(rows))
        insert_samples(connection, entries)


# --- PostgreSQL: one statement per batch, the columns as arrays ---------------------------------
#
# The rollups' statement-level trigger (migration 0014) sums the rows one statement inserted and
# locks the rollup rows they add to in one order: the whole batch must be one statement (an
# ``executemany`` is a statement per row, which would lock them in the batch's order, row by row:
# several writers deadlocked). ``unnest`` of one array per column takes any number of rows with
# one parameter per column; the SQL text never changes (psycopg prepares it after a few uses).


# psycopg dumps a list as an array of one type, and refuses one that mixes ``int`` and ``float``
# ("cannot dump lists of mixed types"): a ``float`` field holds an ``int`` as type hints allow
# (``latency_ms=5``), so those columns' ints go as floats, as SQLAlchemy's insert sent them.
_FLOATS: frozenset[str] = frozenset(
    column.name for column in RequestRow.__table__.columns if isinstance(column.type, Float)
)


def _arrays(rows: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    """One array per column of ``rows``, each of one Python type (None aside)."""
    arrays = []
    for name in _FIELDS:
        values = [r[name] for r in rows]
        if name in _FLOATS:
            values = [v if v is None or type(v) is float else float(v) for v in values]
        arrays.append(values)
    return tuple(arrays)


@cache
def _postgresql_sql() -> str:
    columns = RequestRow.__table__.columns
    make: Any = postgresql.dialect  # untyped in SQLAlchemy: any PostgreSQL dialect compiles alike
    dialect = make()
    arrays = ", ".join(f"%s::{columns[n].type.compile(dialect=dialect)}[]" for n in _FIELDS)
    return (
        f"INSERT INTO {RequestRow.__tablename__} ({', '.join(_FIELDS)}) "
        f"SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING"
    )


# --- SQLite: multi-row VALUES on the raw connection ---------------------------------------------
#
# sqlite3's executemany releases and retakes the GIL for every row, and the thread retaking it
# competes with the event loop each time (measured: the gateway lost ~12% of its requests/s with
# the ledger on). One multi-row INSERT per chunk steps once: the same rows, a few GIL handoffs.
# Values go through the columns' own SQLAlchemy bind processors, so they are stored exactly as
# the ORM path would store (and the report reads) them.

_SQLITE_MAX_VARIABLES = 32_766


@cache
def _sqlite_processors(engine_id: int, dialect: Any) -> tuple[Any, ...]:
    columns = RequestRow.__table__.columns
    return tuple(
        columns[name].type.dialect_impl(dialect).bind_processor(dialect) for name in _FIELDS
    )


@cache
def _sqlite_sql(rows: int) -> str:
    row = "(" + ", ".join("?" * len(_FIELDS)) + ")"
    return (
        f"INSERT INTO {RequestRow.__tablename__} ({', '.join(_FIELDS)}) VALUES "
        + ", ".join([row] * rows)
        + " ON CONFLICT (id) DO NOTHING"
    )


def _sqlite_insert(engine: Engine, entries: Sequence[LedgerEntry]) -> None:
    try:
        _sqlite_write(engine, entries)
    except sqlite3.Error as exc:
        # The writer tells an unreachable database from a refused row by SQLAlchemy's types,
        # as on the ORM path: wrap the driver's error the way SQLAlchemy does.
        raise DBAPIError.instance("INSERT INTO ledger_requests", None, exc, sqlite3.Error) from exc


def _sqlite_write(engine: Engine, entries: Sequence[LedgerEntry]) -> None:
    processors = _sqlite_processors(id(engine.dialect), engine.dialect)
    per_chunk = _SQLITE_MAX_VARIABLES // len(_FIELDS)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for start in range(0, len(entries), per_chunk):
            chunk = entries[start : start + per_chunk]
            params: list[Any] = []
            for entry in chunk:
                row = _row(entry)
                for name, process in zip(_FIELDS, processors, strict=True):
                    value = row[name]
                    params.append(process(value) if process is not None else value)
            cursor.execute(_sqlite_sql(len(chunk)), params)
        samples = [e for e in entries if isinstance(e, SampledEntry) and e.embedding]
        if samples:
            cursor.executemany(_SQLITE_SAMPLE_SQL, _sample_params(engine, samples))
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()


_SQLITE_SAMPLE_SQL = (
    f"INSERT INTO {AdaptiveSampleRow.__tablename__} (request_id, ts, tier, base_score, "
    f"embedding, owner) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING"
)


def _sample_params(engine: Engine, samples: Sequence[SampledEntry]) -> list[tuple[Any, ...]]:
    column = AdaptiveSampleRow.__table__.columns["ts"]
    process = column.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    return [
        (
            e.id,
            process(e.ts) if process else e.ts,
            e.tier[:64],
            e.base_score,
            e.embedding,
            owner_scope(e.key_id, e.team),
        )
        for e in samples
    ]

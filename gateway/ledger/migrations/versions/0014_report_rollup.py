"""``ledger_rollup_hourly`` and ``ledger_latency_daily``: the savings report's sums per UTC
hour, and its latency histograms per UTC day, so a report over a month of a million requests
reads thousands of rows instead of every one (before, ``/admin/report`` and ``/dashboard`` gave
up past their 2 s at a few hundred thousand rows on SQLite).

A trigger on ``ledger_requests`` adds the inserted rows to both, in the insert's transaction; a
row skipped as already there (``ON CONFLICT DO NOTHING``, a replay from the outbox) is not added.

On PostgreSQL it is a statement-level trigger: its transition table holds the rows the statement
inserted (only those: not the ones ``ON CONFLICT DO NOTHING`` skipped; CREATE TRIGGER, "NEW
TABLE": "the after-images of all rows updated or inserted by the statement"), summed per rollup
row and upserted with one ``INSERT … SELECT … GROUP BY … ORDER BY <key> ON CONFLICT DO UPDATE``
per table, the hourly table first. Every writer's transaction so locks the rollup rows it adds to
once each, in one order (table, then key): replicas writing batches at once wait for each other
at most, never in a cycle. A row-level trigger locked them in each batch's own order, once per
row: several writers deadlocked (PostgreSQL aborted one batch; it went to the outbox) and
inserts were half as fast. SQLite keeps a row-level trigger: one writer at a time, no deadlock.

A second trigger subtracts deleted rows (an operator's retention job, test traffic removed by
hand) exactly as the first added them, and removes a rollup row (a histogram bin) whose count
reaches 0: a report after a delete is the remaining rows' report. On PostgreSQL it is
statement-level as well (its transition table ``old_rows``: the rows the statement deleted),
summed per rollup row and added negated with the insert's own upsert, in the same order (table,
then key), so deleting and inserting transactions never lock rollup rows in a cycle; the rows it
brought to 0 are then deleted (rows this transaction already holds locked). A TRUNCATE of
``ledger_requests`` (PostgreSQL: no row triggers fire) empties both rollup tables, by DELETE (a
TRUNCATE there would take their table locks, which a report reading them holds against it).
No code updates a ledger row (rows are inserted, and deleted by an operator): there is no UPDATE
trigger, and a row changed by hand in a figure's column leaves the rollups with its old values.

The rows already in the ledger are summed here (the backfill), after the triggers are made and in
the same transaction: on PostgreSQL the trigger's lock holds back other writers until then.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None
# Additive: new tables kept by a trigger, which fires for any code's inserts, so code at 0013
# (and back to 0010, see 0011) keeps writing rows, and they are in the sums.
oldest_code = "0010"

ROLLUP = "ledger_rollup_hourly"
LATENCY = "ledger_latency_daily"
TRIGGER = "ledger_rollup_insert"
FUNCTION = "ledger_rollup_add"  # PostgreSQL's trigger function
DELETE_TRIGGER = "ledger_rollup_delete"
DELETE_FUNCTION = "ledger_rollup_subtract"
TRUNCATE_TRIGGER = "ledger_rollup_truncate"  # PostgreSQL only (SQLite has no TRUNCATE)
TRUNCATE_FUNCTION = "ledger_rollup_clear"
BIN_RATIO = 1.02
ZERO_BIN = -1_000_000  # a latency of 0 ms (or less)

# The grouping columns both tables share, as (column, expression over the request row ``r``).
_SHARED = (
    ("team", "coalesce({r}.team, '')"),
    ("route", "{r}.route"),
    ("tier", "{r}.tier"),
    ("backend", "{r}.backend"),
    ("model", "{r}.model"),
    ("cost_source", "{r}.cost_source"),
    ("capabilities", "coalesce({r}.capabilities, '')"),
    ("canary_arm", "coalesce({r}.canary_arm, '')"),
    ("api", "coalesce({r}.api, '')"),
)


def _hourly(sqlite: bool) -> tuple[tuple[str, str], ...]:
    hour = (
        "substr({r}.ts, 1, 13)"
        if sqlite
        else "to_char({r}.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"
    )
    escalated = (
        "({r}.cascade IS 'escalated')"
        if sqlite
        else "({r}.cascade IS NOT DISTINCT FROM 'escalated')"
    )
    return (
        ("hour", hour),
        *_SHARED,
        ("status", "{r}.status"),
        ("fallback_chain", "{r}.fallback_chain"),
        ("escalated", escalated),
        ("hit", "({r}.cache = 'hit')"),
        ("cost_known", "({r}.cost_usd IS NOT NULL)"),
        ("baseline_known", "({r}.baseline_cost_usd IS NOT NULL)"),
        ("usage_estimated", "{r}.usage_estimated"),
        ("baseline_model", "coalesce({r}.baseline_model, '')"),
    )


def _pico(column: str, sqlite: bool) -> str:
    if sqlite:  # a float per row: rounded to the ledger's 12 decimals, as the report reads it
        return f"coalesce(CAST(round({column} * 1e12) AS INTEGER), 0)"
    return f"coalesce(round({column} * 1000000000000)::bigint, 0)"


def _sums(sqlite: bool) -> tuple[tuple[str, str], ...]:
    return (
        ("requests", "1"),
        ("prompt_tokens", "{r}.prompt_tokens"),
        ("completion_tokens", "{r}.completion_tokens"),
        ("cached_tokens", "{r}.cached_tokens"),
        ("cost_pico", _pico("{r}.cost_usd", sqlite)),
        ("baseline_pico", _pico("{r}.baseline_cost_usd", sqlite)),
    )


def _bin(value: str, sqlite: bool) -> str:
    ratio = f"ln({BIN_RATIO})" if sqlite else f"ln({BIN_RATIO}::float8)"
    floor = f"CAST(floor(ln({value}) / {ratio}) AS INTEGER)"
    return f"CASE WHEN {value} > 0 THEN {floor} ELSE {ZERO_BIN} END"


def _daily(sqlite: bool, metric: str, value: str) -> tuple[tuple[str, str], ...]:
    """The latency histograms' keys: ``metric`` and ``value`` (the milliseconds binned), SQL."""
    day = "substr({r}.ts, 1, 10)" if sqlite else "to_char({r}.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return (("day", day), *_SHARED, ("metric", metric), ("bin", _bin(value, sqlite)))


def _upsert(
    table: str,
    keys: tuple[tuple[str, str], ...],
    sums: tuple[tuple[str, str], ...],
    r: str,
    where: str,
) -> str:
    """One row's (``r``: NEW) upsert into ``table``; ``where``: whether the row counts."""
    columns = [c for c, _ in (*keys, *sums)]
    values = [e.format(r=r) for _, e in (*keys, *sums)]
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c, _ in sums)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} WHERE {where} "
        f"ON CONFLICT ({', '.join(c for c, _ in keys)}) DO UPDATE SET {adds};"
    )


def _subtract(
    table: str,
    keys: tuple[tuple[str, str], ...],
    sums: tuple[tuple[str, str], ...],
    r: str,
    where: str,
) -> str:
    """One deleted row's (``r``: OLD) subtraction from ``table``, and the removal of the rollup
    row if its count is then 0; ``where``: whether the row counted."""
    match = " AND ".join(f"{c} = {e.format(r=r)}" for c, e in keys)
    subs = ", ".join(f"{c} = {c} - {e.format(r=r)}" for c, e in sums)
    return (
        f"UPDATE {table} SET {subs} WHERE {match} AND {where}; "
        f"DELETE FROM {table} WHERE {match} AND {where} AND requests = 0;"
    )


def _statements(sqlite: bool) -> tuple[list[str], list[str], list[str]]:
    """(the insert trigger body's upserts, the delete trigger body's, the backfill's inserts)."""
    one = (("requests", "1"),)
    answered = "{r}.status = 200"
    timed = answered + " AND {r}.ttft_ms IS NOT NULL"
    latency = _daily(sqlite, "'latency'", "{r}.latency_ms")
    parts = (
        (ROLLUP, _hourly(sqlite), _sums(sqlite), "1 = 1"),
        (LATENCY, latency, one, answered),
        (LATENCY, _daily(sqlite, "'ttft'", "{r}.ttft_ms"), one, timed),
    )
    backfill = [_grouped(t, k, s, "ledger_requests r", w.format(r="r")) for t, k, s, w in parts]
    if sqlite:
        added = [_upsert(t, k, s, "NEW", w.format(r="NEW")) for t, k, s, w in parts]
        subtracted = [_subtract(t, k, s, "OLD", w.format(r="OLD")) for t, k, s, w in parts]
        return added, subtracted, backfill
    return _per_statement("new_rows", 1), _per_statement("old_rows", -1), backfill


def _per_statement(rows: str, sign: int) -> list[str]:
    """PostgreSQL's trigger body over the transition table ``rows``: one upsert per table, the
    sums times ``sign``; latency and time to first token from one pass (``m``: both metrics of
    each answered row; a row without a ttft has no ttft bin). Subtracting (``sign`` -1), the
    rollup rows brought to 0 are then deleted."""
    metrics = (
        f"{rows} r CROSS JOIN LATERAL (VALUES ('latency', r.latency_ms), ('ttft', r.ttft_ms)) "
        "AS m (metric, ms)"
    )
    latency = _daily(False, "m.metric", "m.ms")
    answered = "r.status = 200 AND m.ms IS NOT NULL"
    parts = (
        (ROLLUP, _hourly(False), _sums(False), f"{rows} r", "true"),
        (LATENCY, latency, (("requests", "1"),), metrics, answered),
    )
    body = [_grouped(t, k, s, source, where, sign) for t, k, s, source, where in parts]
    if sign < 0:
        body += [_emptied(t, k, source, where) for t, k, _s, source, where in parts]
    return body


def _emptied(table: str, keys: tuple[tuple[str, str], ...], source: str, where: str) -> str:
    """The deletion of ``table``'s rows that ``source``'s rows (``r``) brought to a count of 0:
    only rows of their keys, which this transaction has just locked (no other rows' locks)."""
    columns = ", ".join(c for c, _ in keys)
    values = ", ".join(e.format(r="r") for _, e in keys)
    return (
        f"DELETE FROM {table} WHERE requests <= 0 AND ({columns}) IN "
        f"(SELECT {values} FROM {source} WHERE {where});"
    )


def _grouped(
    table: str,
    keys: tuple[tuple[str, str], ...],
    sums: tuple[tuple[str, str], ...],
    source: str,
    where: str,
    sign: int = 1,
) -> str:
    """The upsert of ``source``'s rows (``r``) into ``table``, summed per key (times ``sign``:
    -1 subtracts them), in key order: the order every transaction takes the rollup rows' locks
    in, inserting or deleting."""
    columns = [c for c, _ in (*keys, *sums)]
    values = [e.format(r="r") for _, e in keys]
    minus = "-" if sign < 0 else ""
    totals = [
        (f"{minus}count(*)" if e == "1" else f"{minus}sum({e.format(r='r')})") for _, e in sums
    ]
    groups = ", ".join(str(i + 1) for i in range(len(keys)))
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c, _ in sums)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values + totals)} "
        f"FROM {source} WHERE {where} GROUP BY {groups} ORDER BY {groups} "
        f"ON CONFLICT ({', '.join(c for c, _ in keys)}) DO UPDATE SET {adds};"
    )


def _shared_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("team", sa.String(length=64), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("backend", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("cost_source", sa.String(length=32), nullable=False),
        sa.Column("capabilities", sa.String(length=256), nullable=False),
        sa.Column("canary_arm", sa.String(length=64), nullable=False),
        sa.Column("api", sa.String(length=16), nullable=False),
    ]


def upgrade() -> None:
    shared = [c.name for c in _shared_columns()]
    op.create_table(
        ROLLUP,
        sa.Column("hour", sa.String(length=13), nullable=False),
        *_shared_columns(),
        sa.Column("status", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fallback_chain", sa.String(length=512), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("hit", sa.Boolean(), nullable=False),
        sa.Column("cost_known", sa.Boolean(), nullable=False),
        sa.Column("baseline_known", sa.Boolean(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("baseline_model", sa.String(length=256), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_pico", sa.BigInteger(), nullable=False),
        sa.Column("baseline_pico", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour",
            *shared,
            "status",
            "fallback_chain",
            "escalated",
            "hit",
            "cost_known",
            "baseline_known",
            "usage_estimated",
            "baseline_model",
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        LATENCY,
        sa.Column("day", sa.String(length=10), nullable=False),
        *_shared_columns(),
        sa.Column("metric", sa.String(length=8), nullable=False),
        sa.Column("bin", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", *shared, "metric", "bin"),
        sqlite_with_rowid=False,
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        try:
            op.get_bind().exec_driver_sql("SELECT ln(2.0)")
        except sa.exc.OperationalError:
            raise RuntimeError(
                "this SQLite has no math functions (ln), which the ledger's latency histograms "
                "need: use a Python whose sqlite3 is 3.35 or newer, built with them (the default)"
            ) from None
    added, subtracted, backfill = _statements(sqlite)
    if sqlite:
        for name, event, body in (
            (TRIGGER, "INSERT", added),
            (DELETE_TRIGGER, "DELETE", subtracted),
        ):
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON ledger_requests BEGIN "
                + " ".join(body)
                + " END"
            )
    else:
        _pg_trigger(TRIGGER, FUNCTION, "INSERT", "REFERENCING NEW TABLE AS new_rows", added)
        _pg_trigger(
            DELETE_TRIGGER,
            DELETE_FUNCTION,
            "DELETE",
            "REFERENCING OLD TABLE AS old_rows",
            subtracted,
        )
        clear = [f"DELETE FROM {ROLLUP};", f"DELETE FROM {LATENCY};"]
        _pg_trigger(TRUNCATE_TRIGGER, TRUNCATE_FUNCTION, "TRUNCATE", "", clear)
    for statement in backfill:
        op.execute(statement)


def _pg_trigger(name: str, function: str, event: str, referencing: str, body: list[str]) -> None:
    """A PostgreSQL statement-level trigger ``name`` after ``event``, running ``body``."""
    op.execute(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{' '.join(body)} RETURN NULL; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {name} AFTER {event} ON ledger_requests {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


def downgrade() -> None:
    on = "" if _sqlite() else " ON ledger_requests"
    for name in (TRIGGER, DELETE_TRIGGER, TRUNCATE_TRIGGER):
        op.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
    if not _sqlite():
        for function in (FUNCTION, DELETE_FUNCTION, TRUNCATE_FUNCTION):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table(LATENCY)
    op.drop_table(ROLLUP)


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")

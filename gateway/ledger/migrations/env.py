"""Alembic environment: the URL comes from the caller's config (``tiergate db upgrade`` sets it
from TIERGATE_DATABASE_URL), the metadata from ``gateway.ledger.models``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection, Engine, engine_from_config, event, pool, text
from sqlalchemy import inspect as sa_inspect

from gateway.ledger.db import SchemaMismatch
from gateway.ledger.models import Base
from gateway.ledger.schema_compat import COMPAT_TABLE, decide, read_oldest_code, write_oldest_code

config = context.config
target_metadata = Base.metadata
# A PostgreSQL advisory lock (any constant, the same in every tiergate) held by the migration's
# transaction: several `tiergate db upgrade` at once (replicas started together with
# TIERGATE_MIGRATE=1) take turns, and each after the first finds the schema at head, instead
# of racing to create the same tables and failing on a duplicate key.
MIGRATION_LOCK = 0x7469657267617465  # "tiergate"


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        if connectable.dialect.name == "sqlite":
            _sqlite_transactional_ddl(connectable)
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _sqlite_transactional_ddl(engine: Engine) -> None:
    """SQLite migrates in one transaction, as PostgreSQL does: Python's sqlite3 commits each
    CREATE/DROP/ALTER by itself (it opens transactions before DML only), so a migration that
    failed or was killed half way left its first tables behind with the revision unchanged, and
    every later upgrade failed on them ("table ... already exists"). ``BEGIN IMMEDIATE`` also
    takes the write lock before the revision is read: two upgrades at once (gateway workers
    checking a schema their start could not) take turns, the second finding it at head."""

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver leaves BEGIN/COMMIT to SQLAlchemy

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        on_version_apply=_record_oldest_code,
        # SQLite: one transaction for the whole upgrade (``_sqlite_transactional_ddl``)
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Before the version is read: a second upgrade waits here until the first commits.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        _refuse_a_revision_from_newer_code(connection)
        context.run_migrations()


def _chain() -> list[str]:
    """This code's revisions, oldest first (the history is one line)."""
    return [script.revision for script in reversed(list(context.script.walk_revisions()))]


def _refuse_a_revision_from_newer_code(connection: Connection) -> None:
    """A database migrated by a newer tiergate (a revision this code does not know): stop with
    what that means, under the lock, instead of Alembic's "Can't locate revision"."""
    current = context.get_context().get_current_revision()
    chain = _chain()
    if current is None or current in chain:
        return
    raise SchemaMismatch(decide(current, read_oldest_code(connection, current), chain))


def _record_oldest_code(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """After each step, inside its transaction: the schema's revision now and the oldest code
    that takes it (its migration's ``oldest_code``), for gateways older than the schema."""
    del step, run_args
    connection = ctx.connection
    if len(heads) != 1 or connection is None or not sa_inspect(connection).has_table(COMPAT_TABLE):
        return  # below 0012 (or down to nothing): nowhere to record it
    [current] = [str(head) for head in heads]
    script = context.script.get_revision(current)
    oldest = getattr(script.module, "oldest_code", current) if script is not None else current
    write_oldest_code(connection, current, oldest)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Alembic environment: the URL comes from the caller's config (``tiergate db upgrade`` sets it
from TIERGATE_DATABASE_URL), the metadata from ``gateway.ledger.models``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool, text

from gateway.ledger.models import Base

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
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Before the version is read: a second upgrade waits here until the first commits.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

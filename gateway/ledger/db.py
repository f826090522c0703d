"""Engines and schema migrations for the ledger. The same code runs on SQLite (the embedded
default, a file under ``./.tiergate/``) and PostgreSQL (``postgresql+psycopg://…``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect

from gateway.ledger.schema_compat import SchemaState, SchemaVerdict, decide, read_oldest_code

DEFAULT_DIR = Path(".tiergate")
TCP_USER_TIMEOUT_MS = 5_000


class LedgerError(RuntimeError):
    """The ledger cannot be used as configured; the message says what to do."""


class SchemaMismatch(LedgerError):
    """The schema's revision is one this gateway cannot use, or cannot migrate: behind it, or
    ahead of it (a newer tiergate migrated it). ``state`` says which; the message, what to do."""

    def __init__(self, state: SchemaState) -> None:
        super().__init__(state.describe())
        self.state = state


def default_url() -> str:
    return f"sqlite:///{(DEFAULT_DIR / 'ledger.db').resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def display_url(url: str) -> str:
    """``url`` as it may be shown or logged: the password masked (``***``), in the user part
    and in the query (``?password=…``, ``?sslpassword=…``)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    hidden = {k: "***" for k in parsed.query if "password" in k.lower()}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str, *, statement_timeout_ms: int | None = None) -> Engine:
    """An engine for ``url``. ``statement_timeout_ms`` bounds each statement on PostgreSQL (the
    writer's engine: a hung database then fails fast and rows go to the outbox)."""
    if is_sqlite(url):
        _make_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": 5})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    # A frozen server or network (packets dropped, not refused) ends a call within seconds:
    # unacknowledged data fails the socket after TCP_USER_TIMEOUT, an idle connection is probed
    # by keepalives; the server-side statement_timeout alone cannot, since nothing arrives.
    connect_args: dict[str, Any] = {
        "connect_timeout": 3,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    if statement_timeout_ms is not None:
        connect_args["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return create_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args
    )


def _make_sqlite_dir(url: str) -> None:
    """SQLite creates the file, not the folders above it (``.tiergate/`` in a fresh directory)."""
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(
                f"TIERGATE_DATABASE_URL: the SQLite ledger's folder {folder} cannot be created "
                f"({exc.strerror or type(exc).__name__}); point it at a writable folder, e.g. "
                f"sqlite:////var/lib/tiergate/ledger.db"
            ) from None


def retire_engine(engine: Engine) -> None:
    """Close ``engine`` for good: its idle connections now, and any connection still checked
    out on a worker thread (an insert a timed-out shutdown gave up on) when that thread hands
    it back. ``dispose()`` alone leaves such late connections open in the discarded pool."""
    event.listen(engine, "checkin", _close_on_checkin)
    engine.dispose()


def _close_on_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.invalidate()  # closes the driver's connection; nothing reuses this engine


_BEHIND = (SchemaVerdict.EMPTY, SchemaVerdict.BEHIND)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def migrations_dir() -> Path:
    """The Alembic scripts, shipped inside the package (``gateway/ledger/migrations/``): a wheel
    install migrates from any working directory, with no ``alembic.ini`` beside it."""
    if not (MIGRATIONS / "env.py").is_file():
        raise LedgerError("the Alembic migrations are missing from this installation; reinstall")
    return MIGRATIONS


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to ``revision``. A database a newer tiergate migrated (a revision this code does
    not know) raises ``SchemaMismatch``, its state saying whether this code may use it."""
    from alembic import command

    if is_sqlite(url):
        _make_sqlite_dir(url)  # `tiergate db upgrade` in a fresh directory
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def revision_chain(url: str) -> list[str]:
    """This code's Alembic revisions, oldest first (its head last)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(url)).walk_revisions()
    return [script.revision for script in reversed(list(scripts))]


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_state(url: str, engine: Engine, code_head: str | None = None) -> SchemaState:
    """The database's schema against this code's head (``code_head``: as if this code's head
    were that earlier revision, for tests of an older gateway meeting a newer schema)."""
    from alembic.runtime.migration import MigrationContext

    chain = revision_chain(url)
    if code_head is not None:
        chain = chain[: chain.index(code_head) + 1]
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        oldest = read_oldest_code(connection, current) if current is not None else None
    return decide(current, oldest, chain)


def ensure_schema(url: str, engine: Engine, code_head: str | None = None) -> SchemaState:
    """The schema this gateway may use: at its head, or ahead of it and recorded compatible
    with it (a newer image migrated first: a rolling update, a rollback). The embedded SQLite
    behind head is upgraded in place; a PostgreSQL behind head, or a schema ahead and not
    compatible, raises ``SchemaMismatch`` (migrating a shared production database is an
    operator's decision)."""
    state = schema_state(url, engine, code_head)
    if state.usable:
        return state
    if is_sqlite(url) and code_head is None and state.verdict in _BEHIND:
        upgrade(url)
        return schema_state(url, engine)
    raise SchemaMismatch(state)


def recheck_schema(url: str, engine: Engine) -> SchemaState:
    """``ensure_schema`` once the database answers after a start that could not check it:
    the embedded SQLite behind head is upgraded as at start, any other state is returned (not
    raised: the gateway is serving, and waits for the operator's `tiergate db upgrade`)."""
    try:
        return ensure_schema(url, engine)
    except SchemaMismatch as exc:
        return exc.state


def check_ledger(url: str) -> None:
    """Before the server starts: upgrade the embedded SQLite, or check PostgreSQL's revision.
    An unreachable database is not fatal (rows go to the outbox); a stale schema is."""
    from sqlalchemy.exc import OperationalError

    engine = make_engine(url)
    try:
        ensure_schema(url, engine)
    except OperationalError:
        pass  # reported by the server at start, which then writes to the outbox
    finally:
        engine.dispose()


def has_table(engine: Engine, name: str) -> bool:
    return inspect(engine).has_table(name)

"""The ledger schema: Alembic up, down and up again, no drift from the models, and who migrates
(the embedded SQLite upgrades itself; PostgreSQL waits for ``tiergate db upgrade``)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy import Engine, insert, inspect, text

from gateway.ledger.db import (
    LedgerError,
    alembic_config,
    current_revision,
    downgrade,
    ensure_schema,
    has_table,
    head_revision,
    is_sqlite,
    make_engine,
    upgrade,
)
from gateway.ledger.models import RequestRow
from tests.support import postgres
from tests.support.ledger_rows import ledger_entry

AFTER_0010 = {"baseline_model"}  # ledger_requests' columns added after 0010 (0013)

TABLE = "ledger_requests"


def _tiergate(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``tiergate`` program with no TIERGATE_* setting but ``env``."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from gateway.cli.main import main; main()"]
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _state(url: str) -> tuple[bool, str | None]:
    """Whether the ledger table exists, and the revision Alembic has recorded."""
    engine = make_engine(url)
    try:
        return has_table(engine, TABLE), current_revision(engine)
    finally:
        engine.dispose()


def test_up_down_up(ledger_url: str) -> None:
    """Upgrading creates the table at head, downgrading to base removes it, upgrading again
    recreates it."""
    head = head_revision(ledger_url)
    assert head is not None
    assert _state(ledger_url) == (False, None)

    upgrade(ledger_url)
    assert _state(ledger_url) == (True, head)

    downgrade(ledger_url, "base")
    assert _state(ledger_url) == (False, None)

    upgrade(ledger_url)
    assert _state(ledger_url) == (True, head)


def test_alembic_check_finds_no_drift(ledger_url: str) -> None:
    """At head, the database the migrations build matches ``gateway.ledger.models`` exactly."""
    upgrade(ledger_url)
    command.check(alembic_config(ledger_url))


def test_alembic_check_sees_drift_when_behind(ledger_url: str) -> None:
    """The drift check is real: an empty database (no table) differs from the models."""
    with pytest.raises(CommandError):
        command.check(alembic_config(ledger_url))


def _ensure(url: str) -> None:
    engine: Engine = make_engine(url)
    try:
        ensure_schema(url, engine)
    finally:
        engine.dispose()


def test_ensure_schema_upgrades_sqlite_and_refuses_stale_postgresql(ledger_url: str) -> None:
    """The embedded SQLite is migrated in place; a PostgreSQL behind head is refused with a
    message naming ``tiergate db upgrade``, and accepted once upgraded."""
    if is_sqlite(ledger_url):
        _ensure(ledger_url)
        assert _state(ledger_url) == (True, head_revision(ledger_url))
        return
    with pytest.raises(LedgerError, match=r"run `tiergate db upgrade`"):
        _ensure(ledger_url)
    assert _state(ledger_url) == (False, None)  # nothing was changed behind the operator's back
    upgrade(ledger_url)
    _ensure(ledger_url)  # at head: accepted


def test_db_upgrade_command_brings_an_empty_database_to_head(
    ledger_url: str, tmp_path: Path
) -> None:
    """``tiergate db upgrade`` with TIERGATE_DATABASE_URL migrates that database to head and says
    so without printing the URL's secrets."""
    done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=ledger_url)
    assert done.returncode == 0, done.stderr
    assert "ledger schema is at head" in done.stdout
    assert _state(ledger_url) == (True, head_revision(ledger_url))


def test_db_upgrade_command_reports_an_unreachable_database(tmp_path: Path) -> None:
    """An unreachable PostgreSQL is a one-line error and exit code 1, not a traceback."""
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=unreachable)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot upgrade the ledger database")
    assert "Traceback" not in done.stderr


def test_db_upgrade_reads_the_heroku_postgres_scheme(
    pg_cluster: postgres.Cluster, tmp_path: Path
) -> None:
    """``postgres://…``, the form Heroku and other platforms hand out, is PostgreSQL: `db
    upgrade` migrates it (SQLAlchemy alone knows no ``postgres`` dialect: a traceback)."""
    with postgres.database(pg_cluster) as url:
        heroku = "postgres://" + url.split("://", 1)[1]
        done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=heroku)
        assert done.returncode == 0, done.stderr
        assert "ledger schema is at head (postgresql://" in done.stdout
        assert _state(url) == (True, head_revision(url))


@pytest.mark.parametrize(
    "url",
    [
        "foo://user:s3cret-pw@db.example/x",
        "postgresql+asyncpg://user:s3cret-pw@db.example/x",
        "not a url",
    ],
)
def test_db_upgrade_names_the_variable_for_an_unusable_url(url: str, tmp_path: Path) -> None:
    """An unknown scheme or a driver tiergate does not ship is one line naming
    TIERGATE_DATABASE_URL and the forms that work (never the password), exit code 2."""
    done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=url)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: TIERGATE_DATABASE_URL: ")
    assert "postgresql://" in line
    if "+" not in url:
        assert "sqlite:///" in line
    assert "s3cret" not in done.stderr + done.stdout


def test_db_upgrade_names_the_variable_for_a_sqlite_folder_it_cannot_make(tmp_path: Path) -> None:
    """A SQLite path under a file (no folder can be made there) is one line, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _tiergate(
        "db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=f"sqlite:///{blocker}/ledger.db"
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("error: TIERGATE_DATABASE_URL: ")
    assert str(blocker) in line


def test_0004_adds_and_removes_the_canary_tables(ledger_url: str) -> None:
    """Revision 0004 creates ``ledger_feedback`` and ``canary_events``; going back to 0003
    removes them and keeps ``ledger_requests``."""
    upgrade(ledger_url, "0004")
    engine = make_engine(ledger_url)
    try:
        assert has_table(engine, "ledger_feedback")
        assert has_table(engine, "canary_events")
        downgrade(ledger_url, "0003")
        assert not has_table(engine, "ledger_feedback")
        assert not has_table(engine, "canary_events")
        assert has_table(engine, TABLE)
    finally:
        engine.dispose()


def test_0005_chains_the_canary_events_already_recorded(ledger_url: str) -> None:
    """Events recorded before 0005 (two of them decided in the same tick) are chained in time
    order, so the unique ``follows`` index holds; a downgrade removes the column."""
    upgrade(ledger_url, "0004")
    engine = make_engine(ledger_url)
    insert = text(
        "INSERT INTO canary_events (id, ts, canary, candidate, action, actor, reason, metrics) "
        "VALUES (:id, :ts, 'c1', 'cand', :action, 'auto', '', '{}')"
    )
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    events = [("e1", t0, "start"), ("e2", t0 + timedelta(hours=1), "rollback")]
    events.append(("e3", t0 + timedelta(hours=1, microseconds=5), "rollback"))  # the race
    try:
        with engine.begin() as connection:
            for eid, ts, action in events:
                connection.execute(insert, {"id": eid, "ts": ts, "action": action})
        upgrade(ledger_url, "0005")
        with engine.connect() as connection:
            chain = connection.execute(
                text("SELECT id, follows FROM canary_events ORDER BY ts")
            ).all()
        assert [tuple(row) for row in chain] == [("e1", ""), ("e2", "e1"), ("e3", "e2")]
        downgrade(ledger_url, "0004")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("canary_events")}
        assert "follows" not in columns
    finally:
        engine.dispose()


def test_0011_gives_the_feedback_labels_already_there_their_tenant(ledger_url: str) -> None:
    """Feedback labels and samples recorded before 0011 take their request's tenant (its team,
    or its key without one), so they keep moving that tenant's routing only; a judge's label
    stays shared, and a feedback label whose request is gone is no tenant's; a downgrade
    removes the column."""
    upgrade(ledger_url, "0010")
    engine = make_engine(ledger_url)
    ts = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            # The columns a 0010 ledger has: today's insert also writes later ones.
            rows = [ledger_entry("r-team", key_id="ka", team="alpha"), ledger_entry("r-solo")]
            connection.execute(
                insert(RequestRow),
                [
                    {f.name: getattr(e, f.name) for f in fields(e) if f.name not in AFTER_0010}
                    for e in rows
                ],
            )
            for rid in ("r-team", "r-solo"):
                connection.execute(
                    text(
                        "INSERT INTO adaptive_samples (request_id, ts, tier, embedding) "
                        "VALUES (:r, :ts, 'cheap', :e)"
                    ),
                    {"r": rid, "ts": ts, "e": b"x"},
                )
            labels = [("r-team", "feedback"), ("r-solo", "feedback")]
            labels += [("r-team", "judge"), ("r-gone", "feedback")]
            for rid, source in labels:
                connection.execute(
                    text(
                        "INSERT INTO adaptive_labels (request_id, ts, source, label, embedding) "
                        "VALUES (:r, :ts, :s, 1.0, :e)"
                    ),
                    {"r": rid, "ts": ts, "s": source, "e": b"x"},
                )
        upgrade(ledger_url, "0011")
        with engine.connect() as connection:
            samples = connection.execute(
                text("SELECT request_id, owner FROM adaptive_samples ORDER BY request_id")
            ).all()
            owners = connection.execute(
                text("SELECT request_id, source, owner FROM adaptive_labels ORDER BY id")
            ).all()
        assert [tuple(row) for row in samples] == [("r-solo", "key:k"), ("r-team", "team:alpha")]
        assert [tuple(row) for row in owners] == [
            ("r-team", "feedback", "team:alpha"),
            ("r-solo", "feedback", "key:k"),
            ("r-team", "judge", None),
            ("r-gone", "feedback", "unknown"),
        ]
        downgrade(ledger_url, "0010")
        with engine.connect() as connection:
            for table in ("adaptive_samples", "adaptive_labels"):
                columns = {c["name"] for c in inspect(connection).get_columns(table)}
                assert "owner" not in columns
    finally:
        engine.dispose()


def _upgrade_after(url: str, barrier: Any, results: Any) -> None:
    """One ``upgrade`` in a process of its own, started with the others at the barrier."""
    barrier.wait()
    try:
        upgrade(url)
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    else:
        results.put(None)


def test_upgrades_started_at_once_take_turns(pg_cluster: postgres.Cluster) -> None:
    """Replicas started together, each migrating first (the image's TIERGATE_MIGRATE=1): four
    processes upgrading one empty PostgreSQL at the same instant all succeed, and the schema is
    at head. Without the migration lock most such rounds ended with some of them failing on a
    duplicate key (``pg_type_typname_nsp_index``: both creating ``alembic_version``)."""
    forked = multiprocessing.get_context("fork")
    for _round in range(4):
        with postgres.database(pg_cluster) as url:
            barrier, results = forked.Barrier(4), forked.Queue()
            processes = [
                forked.Process(target=_upgrade_after, args=(url, barrier, results))
                for _ in range(4)
            ]
            for process in processes:
                process.start()
            outcomes = [results.get(timeout=120) for _ in processes]
            for process in processes:
                process.join(timeout=30)
            assert outcomes == [None] * 4, outcomes
            assert _state(url) == (True, head_revision(url))


def test_db_upgrade_as_a_user_who_may_not_create_tables_says_so(
    pg_cluster: postgres.Cluster, tmp_path: Path
) -> None:
    """A database user without the right to create tables (PostgreSQL 15 and later grant no
    CREATE on ``public`` to users who do not own the database) gets one line saying what to
    grant and exit code 1, not a 120-line traceback."""
    role = f"tiergate_noperm_{os.getpid()}"
    with psycopg.connect(pg_cluster.admin_dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with postgres.database(pg_cluster) as url:
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(pg_cluster.admin_dsn(name), autocommit=True) as admin:
                admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # 15's default
            as_role = url.replace(f"//{pg_cluster.user}@", f"//{role}@", 1)
            done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=as_role)
            assert done.returncode == 1, done.stdout
            assert "Traceback" not in done.stderr
            assert done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith("error: cannot upgrade the ledger database:")
            assert "permission denied" in done.stderr
            assert "GRANT CREATE ON SCHEMA public" in done.stderr
    finally:
        with psycopg.connect(pg_cluster.admin_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_upgrades_of_one_sqlite_file_started_at_once_take_turns(tmp_path: Path) -> None:
    """Gateway workers that could not check the embedded SQLite at start (the file was locked)
    each upgrade it once it answers: four processes upgrading one SQLite file behind head at
    the same instant all succeed, and it is at head. Before, each read the revision, then
    raced to create the same tables (``table ... already exists``)."""
    forked = multiprocessing.get_context("fork")
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'ledger-{round_}.db'}"
        upgrade(url, "0012")
        barrier, results = forked.Barrier(4), forked.Queue()
        processes = [
            forked.Process(target=_upgrade_after, args=(url, barrier, results)) for _ in range(4)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert outcomes == [None] * 4, outcomes
        assert _state(url) == (True, head_revision(url))


def test_a_sqlite_migration_that_fails_half_way_leaves_the_schema_as_it_was(
    tmp_path: Path,
) -> None:
    """0014 fails on SQLite after its first table (a table of its own name already in its way):
    the file is left exactly at 0013 — no new table, no trigger — and once the obstacle is gone
    the upgrade succeeds. Before, SQLite committed each CREATE by itself: the first table stayed
    with the revision unchanged, and every later upgrade failed on it (``already exists``)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url, "0013")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE ledger_latency_daily (x INTEGER)"))
        with pytest.raises(Exception, match="already exists"):
            upgrade(url)
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT name FROM sqlite_master WHERE name LIKE 'ledger_rollup%'")
            ).all()
        assert names == []
        assert current_revision(engine) == "0013"
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE ledger_latency_daily"))
        upgrade(url)
        assert current_revision(engine) == head_revision(url)
    finally:
        engine.dispose()

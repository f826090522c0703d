"""A schema ahead of the code (a newer image migrated first: a rolling update, a rollback): the
gateway starts when the database records that its code still reads and writes it, and is
refused with what to do otherwise; ``tiergate db`` says the same in one line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from gateway.ledger.adaptive import UNKNOWN_OWNER, read_labels
from gateway.ledger.db import (
    SchemaMismatch,
    alembic_config,
    current_revision,
    downgrade,
    ensure_schema,
    has_table,
    head_revision,
    make_engine,
    revision_chain,
    upgrade,
)
from gateway.ledger.schema_compat import COMPAT_TABLE, SchemaVerdict, decide
from tests.ledger.test_migrations import _tiergate

CHAIN = ("0001", "0002", "0003")


@pytest.mark.parametrize(
    ("database", "oldest", "verdict"),
    [
        ("0003", "0003", SchemaVerdict.AT_HEAD),
        (None, None, SchemaVerdict.EMPTY),
        ("0002", None, SchemaVerdict.BEHIND),
        ("0005", "0002", SchemaVerdict.AHEAD_COMPATIBLE),  # additive since 0002
        ("0005", "0003", SchemaVerdict.AHEAD_COMPATIBLE),  # additive since this code's head
        ("0005", "0004", SchemaVerdict.AHEAD_INCOMPATIBLE),  # takes code from 0004 on only
        ("0005", None, SchemaVerdict.AHEAD_INCOMPATIBLE),  # records nothing: no claim
    ],
)
def test_decide(database: str | None, oldest: str | None, verdict: SchemaVerdict) -> None:
    """At head or ahead and recorded compatible with this code: usable; behind, empty, or ahead
    with no such record: not."""
    state = decide(database, oldest, CHAIN)
    assert state.verdict is verdict
    assert state.usable is (verdict in (SchemaVerdict.AT_HEAD, SchemaVerdict.AHEAD_COMPATIBLE))


def test_each_refusal_says_what_to_do() -> None:
    """Behind: run the upgrade. Ahead and incompatible: the newer image, or a downgrade to this
    code's head run by it, never `tiergate db upgrade` (it cannot go back)."""
    behind = decide("0002", None, CHAIN).describe()
    assert "run `tiergate db upgrade`" in behind
    assert "this gateway needs 0003" in behind
    ahead = decide("0005", "0004", CHAIN).describe()
    assert "at revision 0005, newer than this gateway (0003)" in ahead
    assert "takes code from 0004 on" in ahead
    assert "`tiergate db downgrade 0003` (run by the newer image" in ahead
    assert "db upgrade" not in ahead
    assert "\n" not in ahead


def test_every_migration_declares_the_oldest_code_it_takes(tmp_path: Path) -> None:
    """``oldest_code`` of each migration is its own revision or one before it: a migration
    without one (or naming a later revision) would record a claim nothing checked."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    scripts = ScriptDirectory.from_config(alembic_config(url))
    chain = revision_chain(url)
    for script in scripts.walk_revisions():
        oldest = getattr(script.module, "oldest_code", None)
        assert oldest is not None, f"{script.revision} declares no oldest_code"
        assert chain.index(oldest) <= chain.index(script.revision), script.revision


def _compat_rows(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT revision, oldest_code FROM {COMPAT_TABLE}"))
        return [(str(r), str(o)) for r, o in rows]


def test_migrations_record_the_oldest_code_they_take(ledger_url: str) -> None:
    """Upgrading to head records head's ``oldest_code`` (one row); going back below the table
    removes it; upgrading again records it again, once."""
    engine = make_engine(ledger_url)
    try:
        upgrade(ledger_url)
        assert _compat_rows(engine) == [("0014", "0010")]
        downgrade(ledger_url, "0011")
        assert not has_table(engine, COMPAT_TABLE)
        upgrade(ledger_url)
        upgrade(ledger_url)  # at head: changes nothing
        assert _compat_rows(engine) == [("0014", "0010")]
    finally:
        engine.dispose()


def test_code_at_0010_starts_on_a_schema_at_head_and_writes_its_rows(ledger_url: str) -> None:
    """A database migrated to head (a newer image's Job ran) is accepted by code whose head is
    0010, which writes its rows as it always did (no ``owner``); a feedback label such code
    writes is no tenant's, not one every tenant learns from."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        state = ensure_schema(ledger_url, engine, code_head="0010")
        assert state.verdict is SchemaVerdict.AHEAD_COMPATIBLE
        assert (state.database, state.code, state.oldest_code) == (
            head_revision(ledger_url),
            "0010",
            "0010",
        )
        ts = datetime(2026, 12, 5, tzinfo=UTC)
        with engine.begin() as connection:  # 0010's inserts: no owner column
            connection.execute(
                text(
                    "INSERT INTO adaptive_samples (request_id, ts, tier, embedding) "
                    "VALUES ('r-old', :ts, 'cheap', :e)"
                ),
                {"ts": ts, "e": b"x"},
            )
            for source in ("feedback", "judge"):
                connection.execute(
                    text(
                        "INSERT INTO adaptive_labels (request_id, ts, source, label, embedding) "
                        "VALUES ('r-old', :ts, :s, 1.0, :e)"
                    ),
                    {"ts": ts, "s": source, "e": b"x"},
                )
        owners = [label.owner for label in read_labels(engine, after=0)]
        assert owners == [UNKNOWN_OWNER, None]  # the judge's stays shared
    finally:
        engine.dispose()


def _stamp(engine: Engine, revision: str, oldest_code: str | None) -> None:
    """What a newer tiergate's migration leaves: a revision this code does not know, and what
    it records as the oldest code it takes (None: no record)."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        connection.execute(text(f"DELETE FROM {COMPAT_TABLE}"))
        if oldest_code is not None:
            connection.execute(
                text(f"INSERT INTO {COMPAT_TABLE} (revision, oldest_code) VALUES (:r, :o)"),
                {"r": revision, "o": oldest_code},
            )


@pytest.mark.parametrize("oldest", ["0014", "0010"])
def test_a_newer_compatible_schema_is_accepted_as_it_is(ledger_url: str, oldest: str) -> None:
    """A revision from a newer tiergate that records this code (or older) as compatible: the
    gateway starts, and nothing is migrated (the embedded SQLite included)."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        _stamp(engine, "0015", oldest)
        state = ensure_schema(ledger_url, engine)
        assert (state.verdict, state.database) == (SchemaVerdict.AHEAD_COMPATIBLE, "0015")
        assert current_revision(engine) == "0015"
    finally:
        engine.dispose()


@pytest.mark.parametrize("oldest", ["0015", None])
def test_a_newer_incompatible_schema_is_refused_with_what_to_do(
    ledger_url: str, oldest: str | None
) -> None:
    """A revision from a newer tiergate that does not take this code (or says nothing): refused
    with a message naming the newer image and the downgrade, not `tiergate db upgrade` (and no
    "Can't locate revision" from the embedded SQLite's own upgrade)."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        _stamp(engine, "0015", oldest)
        with pytest.raises(SchemaMismatch) as refused:
            ensure_schema(ledger_url, engine)
        assert refused.value.state.verdict is SchemaVerdict.AHEAD_INCOMPATIBLE
        message = str(refused.value)
        assert "at revision 0015, newer than this gateway (0014)" in message
        assert "`tiergate db downgrade 0014`" in message
        assert "db upgrade" not in message
        assert current_revision(engine) == "0015"
    finally:
        engine.dispose()


def test_db_upgrade_on_a_newer_compatible_schema_has_nothing_to_do(
    ledger_url: str, tmp_path: Path
) -> None:
    """`tiergate db upgrade` (a pod of the older image with TIERGATE_MIGRATE=1) on a schema a
    newer tiergate migrated and declared compatible: one line, exit 0, nothing changed; `db
    current` says ahead and compatible."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        _stamp(engine, "0015", "0011")
        done = _tiergate("db", "upgrade", cwd=tmp_path, TIERGATE_DATABASE_URL=ledger_url)
        assert done.returncode == 0, done.stderr
        [line] = done.stdout.splitlines()
        assert line.startswith(
            "nothing to do: the database is at 0015, newer than this gateway (0014), and compatible"
        )
        assert current_revision(engine) == "0015"
        current = _tiergate("db", "current", cwd=tmp_path, TIERGATE_DATABASE_URL=ledger_url)
        assert current.returncode == 0, current.stderr
        assert current.stdout.startswith("ahead_compatible: ")
    finally:
        engine.dispose()


def test_db_upgrade_on_a_newer_incompatible_schema_is_one_line(
    ledger_url: str, tmp_path: Path
) -> None:
    """The same on a schema that does not take this code: one line on stderr saying what to
    do, exit 2, no traceback; `db downgrade` (this image cannot go back from a revision it does
    not know) and `db current` say the same."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        _stamp(engine, "0015", "0015")
        env = {"TIERGATE_DATABASE_URL": ledger_url}
        for args, code in ((("db", "upgrade"), 2), (("db", "downgrade", "0011"), 2)):
            done = _tiergate(*args, cwd=tmp_path, **env)
            assert done.returncode == code, done.stderr
            assert "Traceback" not in done.stderr
            [line] = done.stderr.splitlines()
            assert line.startswith("error: the ledger database is at revision 0015, newer than")
            assert "`tiergate db downgrade 0014`" in line
        current = _tiergate("db", "current", cwd=tmp_path, **env)
        assert current.returncode == 1
        assert current.stdout.startswith("ahead_incompatible: ")
        assert current_revision(engine) == "0015"
    finally:
        engine.dispose()


def test_db_downgrade_goes_back_and_says_so(ledger_url: str, tmp_path: Path) -> None:
    """`tiergate db downgrade REV` (run by the newer image before a rollback) brings the schema
    to REV; a revision this tiergate does not have is a usage error naming the ones it has."""
    upgrade(ledger_url)
    env = {"TIERGATE_DATABASE_URL": ledger_url}
    done = _tiergate("db", "downgrade", "0011", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ledger schema is at 0011")
    engine = make_engine(ledger_url)
    try:
        assert current_revision(engine) == "0011"
    finally:
        engine.dispose()
    bad = _tiergate("db", "downgrade", "0099", cwd=tmp_path, **env)
    assert bad.returncode == 2
    [line] = bad.stderr.splitlines()
    assert line.startswith("error: REVISION: '0099' is not a revision of this tiergate")

"""The outbox for the operator: the rows PostgreSQL refused (kept in the outbox's ``rejected``
table) listed, exported, retried once the cause is fixed and dropped with the real ``tiergate
outbox`` command, on a stopped gateway's outbox and beside a running one (``/readyz`` and
``/metrics`` count them); and the outbox's row counts, kept in the file, true across processes
sharing it and for a file an older tiergate left."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from structlog.testing import capture_logs

from gateway.ledger.capacity import MIN_BYTES
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from tests.http.helpers import gateway, served, until
from tests.ledger.test_writer import entries, entry, stored_ids

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "a short answer"}]}
tiers:
  - {name: cheap, backends: [small]}
"""
CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture
def pg_url(pg_db: str) -> str:
    upgrade(pg_db)
    return pg_db


def constrain(url: str, *, drop: str | None = None, add: tuple[str, str] | None = None) -> None:
    """Drop the CHECK constraint ``drop`` from the ledger table and/or add ``add`` (name,
    condition): how the tests make PostgreSQL refuse rows, and then fix the cause."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if drop is not None:
                connection.execute(text(f"ALTER TABLE ledger_requests DROP CONSTRAINT {drop}"))
            if add is not None:
                name, condition = add
                connection.execute(
                    text(f"ALTER TABLE ledger_requests ADD CONSTRAINT {name} CHECK ({condition})")
                )
    finally:
        engine.dispose()


def tiergate_command(*args: str) -> list[str]:
    """The installed ``tiergate`` (or the module, without it) with ``args``."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from gateway.cli.main import main; main()"]
    )
    return [*command, *args]


def tiergate_env(env: dict[str, str]) -> dict[str, str]:
    """This environment with only the given TIERGATE_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    return {**clean, **env}


def tiergate(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """The installed ``tiergate`` with only the given TIERGATE_* settings; exits with ``code``."""
    done = subprocess.run(
        tiergate_command(*args),
        env=tiergate_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == code, (done.stdout, done.stderr)
    return done


def listed(env: dict[str, str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(tiergate("outbox", "list", "--json", env=env).stdout)
    return rows


async def test_rejected_rows_are_listed_exported_retried_and_dropped(
    pg_url: str, tmp_path: Path
) -> None:
    """Three rows PostgreSQL refuses (a CHECK constraint) are set aside by a gateway's writer;
    with the gateway stopped, `tiergate outbox` lists them (id, when, the constraint in the
    error, size), exports them, retries them after the constraint is narrowed (two go to the
    ledger and leave the outbox, the third stays with the new constraint's error) and drops the
    last only with --yes."""
    constrain(pg_url, add=("no_team_abc", "team NOT IN ('a', 'b', 'c')"))
    path = tmp_path / "outbox.db"
    writer = LedgerWriter(make_engine(pg_url), Outbox(path))
    good = entries(4)
    bad = {team: entry(team=team) for team in "abc"}
    writer.start()
    for one in [*good[:2], *bad.values(), *good[2:]]:
        writer.record(one)
    await writer.flush()
    await writer.aclose()
    env = {"TIERGATE_DATABASE_URL": pg_url, "TIERGATE_OUTBOX_PATH": str(path)}

    rows = listed(env)
    assert sorted(str(r["id"]) for r in rows) == sorted(e.id for e in bad.values())
    for row in rows:
        assert "no_team_abc" in str(row["error"])
        assert isinstance(row["size"], int)
        assert row["size"] > 500  # the row's JSON
        datetime.fromisoformat(str(row["rejected_at"]))
    table = tiergate("outbox", "list", env=env).stdout
    assert all(e.id in table for e in bad.values())
    assert "3 rejected row(s)" in table

    exported = tmp_path / "rejected.jsonl"
    tiergate("outbox", "export", str(exported), env=env)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(line["row"]["team"] for line in lines) == ["a", "b", "c"]
    assert {line["id"] for line in lines} == {line["row"]["id"] for line in lines}
    again = tiergate("outbox", "export", str(exported), env=env, code=2)
    assert "exists" in again.stderr
    assert len(exported.read_text().splitlines()) == 3  # not overwritten

    constrain(pg_url, drop="no_team_abc", add=("no_team_c", "team <> 'c'"))
    retried = tiergate("outbox", "retry", env=env, code=1)
    assert "2 row(s) stored" in retried.stdout
    assert "1 row(s) refused again" in retried.stderr
    assert sorted(stored_ids(pg_url)) == sorted([*(e.id for e in good), bad["a"].id, bad["b"].id])
    (left,) = listed(env)
    assert left["id"] == bad["c"].id
    assert "no_team_c" in str(left["error"])

    refused = tiergate("outbox", "drop", "--id", bad["c"].id, env=env, code=2)
    assert "--yes" in refused.stderr
    assert "export" in refused.stderr
    assert len(listed(env)) == 1
    unknown = tiergate("outbox", "drop", "--id", "nope", "--yes", env=env, code=2)
    assert "nope" in unknown.stderr
    tiergate("outbox", "drop", "--id", bad["c"].id, "--yes", env=env)
    assert listed(env) == []
    box = Outbox(path)
    assert (box.size, box.rejected_size) == (0, 0)
    box.close()


async def test_a_running_gateway_shows_its_rejected_rows_and_a_retry_beside_it(
    pg_url: str, tmp_path: Path
) -> None:
    """A gateway over a real uvicorn whose row PostgreSQL refuses: /readyz (`ledger.outbox.
    rejected`) and /metrics (`tiergate_ledger_outbox_rejected_rows`) say 1; with the cause
    fixed, `tiergate outbox retry` run on its outbox while it serves more requests stores the
    row, and the gateway's figures go back to 0 by themselves."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    path = tmp_path / "outbox.db"
    constrain(pg_url, add=("not_small", "backend <> 'small'"))
    async with (
        gateway(policy, database_url=SecretStr(pg_url), outbox_path=path) as (_asgi, app),
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        writer: LedgerWriter = app.state.ledger
        first = await http.post(CHAT, json={"model": "auto", "messages": ASK})
        assert first.status_code == 200
        await writer.flush()
        ready = (await http.get("/readyz")).json()
        assert ready["ledger"]["outbox"]["rejected"] == 1
        assert ready["ledger"]["outbox"]["rows"] == 0
        metrics = (await http.get("/metrics")).text
        assert "tiergate_ledger_outbox_rejected_rows 1.0" in metrics

        constrain(pg_url, drop="not_small")
        env = {"TIERGATE_DATABASE_URL": pg_url, "TIERGATE_OUTBOX_PATH": str(path)}
        retry = asyncio.create_task(asyncio.to_thread(tiergate, "outbox", "retry", env=env))
        answers = []
        while not retry.done():
            answers.append(await http.post(CHAT, json={"model": "auto", "messages": ASK}))
        done = await retry
        assert "1 row(s) stored" in done.stdout
        assert all(a.status_code == 200 for a in answers)

        # The gateway re-reads the shared file while idle (every 2 s).
        await until(lambda: writer.capacity.reading().rejected == 0, "the retry to be seen")
        assert (await http.get("/readyz")).json()["ledger"]["outbox"]["rejected"] == 0
        assert "tiergate_ledger_outbox_rejected_rows 0.0" in (await http.get("/metrics")).text
        await writer.flush()
    ids = [first.headers["x-request-id"], *(a.headers["x-request-id"] for a in answers)]
    assert sorted(stored_ids(pg_url)) == sorted(ids)  # each exactly once


def test_no_outbox_file_is_an_error_and_none_is_made(tmp_path: Path) -> None:
    """`tiergate outbox list` pointed where no gateway wrote an outbox says so and how to
    point it at the right file, and creates nothing there."""
    where = tmp_path / "elsewhere" / "outbox.db"
    done = tiergate("outbox", "list", env={"TIERGATE_OUTBOX_PATH": str(where)}, code=1)
    assert f"no outbox at {where}" in done.stderr
    assert "TIERGATE_OUTBOX_PATH" in done.stderr
    assert not where.parent.exists()


OLD_SCHEMA = (
    "CREATE TABLE outbox (id TEXT PRIMARY KEY, payload TEXT NOT NULL)",
    "CREATE TABLE rejected (id TEXT PRIMARY KEY, payload TEXT NOT NULL, error TEXT NOT NULL)",
)


def test_an_outbox_an_older_tiergate_left_is_counted_and_listed(tmp_path: Path) -> None:
    """A file from before the counts and the rejection time were kept: opened, its rows are
    counted once, and `tiergate outbox list` shows its rejected rows (no time known)."""
    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    for statement in OLD_SCHEMA:
        old.execute(statement)
    waiting, refused = entries(5), entries(2)
    old.executemany(
        "INSERT INTO outbox VALUES (?, ?)", [(e.id, json.dumps(e.to_json())) for e in waiting]
    )
    old.executemany(
        "INSERT INTO rejected VALUES (?, ?, 'integer out of range')",
        [(e.id, json.dumps(e.to_json())) for e in refused],
    )
    old.commit()
    old.close()
    box = Outbox(path)
    assert (box.size, box.rejected_size) == (5, 2)
    box.close()
    rows = listed({"TIERGATE_OUTBOX_PATH": str(path)})
    assert sorted(str(r["id"]) for r in rows) == sorted(e.id for e in refused)
    assert {r["rejected_at"] for r in rows} == {None}


WORKER = """
import sys
from pathlib import Path
from gateway.ledger.outbox import Outbox
from tests.ledger.test_faults import entry

box = Outbox(Path(sys.argv[1]))
first = int(sys.argv[2])
for n in range(first, first + 600, 50):
    rows = [entry(i) for i in range(n, n + 50)]
    box.put(rows)
    box.put(rows[:10])  # already there: ignored
    box.reject(rows[:5], "refused")
    box.reject(rows[:5], "refused again")  # the same ids: replaced, counted once
    box.remove([r.id for r in rows[40:]])
box.close()
"""


def test_row_counts_stay_true_across_processes_sharing_the_outbox(tmp_path: Path) -> None:
    """Three processes writing, re-writing, rejecting and removing rows in one outbox file at
    once (`serve --workers` shares it): every process's counts, re-read, match what the file
    holds, without counting it."""
    path = tmp_path / "outbox.db"
    watcher = Outbox(path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(first)], env=env)
        for first in (0, 300, 10_000)  # the first two overlap: the same ids from two processes
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    check = sqlite3.connect(path)
    (waiting,) = check.execute("SELECT count(*) FROM outbox").fetchone()
    (rejected,) = check.execute("SELECT count(*) FROM rejected").fetchone()
    check.close()
    assert waiting > 0
    assert rejected > 0
    watcher.refresh()
    assert (watcher.size, watcher.rejected_size) == (waiting, rejected)
    watcher.close()
    again = Outbox(path)
    assert (again.size, again.rejected_size) == (waiting, rejected)
    again.close()


async def test_an_outbox_full_of_rejected_rows_admits_again_once_they_are_dropped(
    tmp_path: Path,
) -> None:
    """Rows the database refused count toward the bound and no replay takes them out: with
    enough of them the gateway refuses every request although its database answers. `tiergate
    outbox drop --all --yes`, run beside it, frees the space and it admits again by itself."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    path = tmp_path / "outbox.db"
    left = Outbox(path)
    left.reject(entries(150), "integer out of range")  # ~1 KB each: past the 64 KiB bound
    left.close()
    with capture_logs() as logs:
        async with gateway(policy, outbox_path=path, outbox_max_bytes=MIN_BYTES) as (http, app):
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["causes"] == ["ledger_outbox_full"]
            assert ready.json()["ledger"]["outbox"]["rejected"] == 150
            refused = await http.post(CHAT, json={"model": "auto", "messages": ASK})
            assert refused.status_code == 503

            env = {"TIERGATE_OUTBOX_PATH": str(path)}
            done = await asyncio.to_thread(tiergate, "outbox", "drop", "--all", "--yes", env=env)
            assert "dropped 150" in done.stdout
            writer: LedgerWriter = app.state.ledger
            await until(lambda: not writer.capacity.full, "the gateway to see the space freed")
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["ledger"]["outbox"]["rejected"] == 0
            answered = await http.post(CHAT, json={"model": "auto", "messages": ASK})
            assert answered.status_code == 200
    (full,) = [e for e in logs if e["event"] == "ledger_outbox_full"]
    assert full["rejected_rows"] == 150
    assert "tiergate outbox list" in full["detail"]
    assert "unreachable" not in full["detail"]  # the database answered all along


def test_a_retry_with_the_database_away_keeps_the_rows_and_says_so(tmp_path: Path) -> None:
    """`tiergate outbox retry` whose database does not answer: exit 1, one line saying to run
    it again once it answers (the URL's password masked), and every row still in the outbox."""
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    box.reject(entries(3), "integer out of range")
    box.close()
    env = {
        "TIERGATE_OUTBOX_PATH": str(path),
        "TIERGATE_DATABASE_URL": "postgresql+psycopg://tiergate:s3cret-pw@127.0.0.1:1/ledger",
    }
    done = tiergate("outbox", "retry", env=env, code=1)
    assert "run this again once it answers" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert len(listed(env)) == 3

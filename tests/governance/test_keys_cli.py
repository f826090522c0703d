"""``tiergate keys``: on SQLite and PostgreSQL, a key is printed once (by create and rotate) and
never again, rotate and revoke take effect in what the key book loads, teams keep what is not
changed, and every mistake is a one-line error with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from gateway.cli.main import app
from gateway.governance import store
from gateway.governance.book import key_digest
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.models import KeyRow
from gateway.ledger.store import insert_batch

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIERGATE_"):
            monkeypatch.delenv(name)


def tg(url: str, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args), env={"TIERGATE_DATABASE_URL": url})
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def created(url: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(tg(url, "keys", "create", *args, "--json").stdout)
    return out


def digests(engine: Engine) -> set[str]:
    return set(store.load(engine))


def test_create_prints_the_key_once_and_nothing_else_does(db_url: str, engine: Engine) -> None:
    tg(db_url, "keys", "team", "eng", "--budget-usd", "10")
    result = tg(
        db_url, "keys", "create", "--name", "alice", "--team", "eng", "--budget-usd", "2.5",
        "--budget-period", "week", "--rpm", "5", "--tpm", "1000", "--routes", "auto,cheap",
        "--expires", "30d", "--on-exhausted", "reject",
    )  # fmt: skip
    keys = [line for line in result.stdout.splitlines() if line.startswith(store.KEY_PREFIX)]
    assert len(keys) == 1
    key = keys[0]
    assert result.stdout.count(key) == 1
    assert "TIERGATE_KEYS_REFRESH_S" in result.stdout
    grant = store.load(engine)[store.digest(key)]
    assert grant.name == "alice"
    assert grant.team == "eng"
    assert grant.key is not None
    assert (grant.key.budget_usd, grant.key.period, grant.key.on_exhausted) == (
        Decimal("2.5"),
        "week",
        "reject",
    )
    assert (grant.key.rpm, grant.key.tpm) == (5, 1000)
    assert grant.routes == frozenset({"auto", "cheap"})
    assert grant.expires_at is not None
    assert grant.expires_at > datetime.now(UTC)
    # No other command shows the key or its digest.
    for args in (
        ("keys", "list"),
        ("keys", "list", "--json"),
        ("keys", "list", "--team", "eng"),
        ("keys", "show", grant.key_id),
        ("keys", "show", grant.key_id, "--json"),
        ("keys", "update", grant.key_id, "--rpm", "6"),
        ("keys", "teams", "--json"),
    ):
        out = tg(db_url, *args)
        assert key not in out.stdout + out.stderr, args
        assert store.digest(key) not in out.stdout, args
        assert "digest" not in out.stdout, args


def test_json_create_shape(db_url: str, engine: Engine) -> None:
    out = created(db_url, "--name", "svc")
    assert out["key"].startswith(store.KEY_PREFIX)
    assert out["id"].startswith("vk-")
    assert out["name"] == "svc"
    assert out["team"] is None
    assert out["revoked_at"] is None
    assert "digest" not in out
    assert store.digest(out["key"]) in digests(engine)


def test_list_json_and_team_filter(db_url: str) -> None:
    tg(db_url, "keys", "team", "eng")
    a = created(db_url, "--name", "a", "--team", "eng")
    b = created(db_url, "--name", "b")
    everyone = json.loads(tg(db_url, "keys", "list", "--json").stdout)
    assert [k["id"] for k in everyone] == [a["id"], b["id"]]
    for row in everyone:
        assert "key" not in row
        assert "digest" not in row
    eng = json.loads(tg(db_url, "keys", "list", "--team", "eng", "--json").stdout)
    assert [k["id"] for k in eng] == [a["id"]]
    table = tg(db_url, "keys", "list").stdout
    assert a["id"] in table
    assert b["id"] in table
    assert "active" in table


def test_rotate_changes_the_key_and_the_old_one_stops_working(db_url: str, engine: Engine) -> None:
    old = created(db_url, "--name", "svc", "--rpm", "9")
    new = json.loads(tg(db_url, "keys", "rotate", old["id"], "--json").stdout)
    assert new["id"] == old["id"]
    assert new["key"] != old["key"]
    assert new["rpm"] == 9
    loaded = digests(engine)
    assert store.digest(old["key"]) not in loaded
    assert store.digest(new["key"]) in loaded
    human = tg(db_url, "keys", "rotate", old["id"]).stdout
    newest = [line for line in human.splitlines() if line.startswith(store.KEY_PREFIX)]
    assert len(newest) == 1
    assert store.digest(newest[0]) in digests(engine)
    assert store.digest(new["key"]) not in digests(engine)


def test_revoke(db_url: str, engine: Engine) -> None:
    key = created(db_url, "--name", "svc")
    out = tg(db_url, "keys", "revoke", key["id"]).stdout
    assert "Revoked" in out
    assert "TIERGATE_KEYS_REFRESH_S" in out
    assert store.digest(key["key"]) not in digests(engine)
    assert "revoked" in tg(db_url, "keys", "list").stdout
    rotate = tg(db_url, "keys", "rotate", key["id"], code=2)
    assert "revoked" in rotate.stderr


def test_update_keeps_what_is_not_given_and_clears_on_request(db_url: str) -> None:
    key = created(
        db_url, "--name", "svc", "--budget-usd", "3", "--routes", "auto,tiny", "--rpm", "4"
    )
    row = json.loads(
        tg(db_url, "keys", "update", key["id"], "--tpm", "50", "--clear", "routes", "--json").stdout
    )
    assert (row["budget_usd"], row["rpm"], row["tpm"], row["routes"]) == (3.0, 4, 50, None)
    row = json.loads(
        tg(db_url, "keys", "update", key["id"], "--expires", "2h", "--on-exhausted", "reject",
           "--json").stdout
    )  # fmt: skip
    assert row["expires_at"] is not None
    assert row["on_exhausted"] == "reject"
    tg(db_url, "keys", "update", key["id"], code=2)  # nothing to change


def test_a_team_keeps_the_limits_not_given(db_url: str) -> None:
    tg(db_url, "keys", "team", "eng", "--budget-usd", "10", "--budget-period", "day")
    out = json.loads(tg(db_url, "keys", "team", "eng", "--rpm", "7", "--json").stdout)
    assert (out["budget_usd"], out["budget_period"], out["rpm"]) == (10.0, "day", 7)
    out = json.loads(tg(db_url, "keys", "team", "eng", "--clear", "budget", "--json").stdout)
    assert (out["budget_usd"], out["rpm"]) == (None, 7)
    teams = json.loads(tg(db_url, "keys", "teams", "--json").stdout)
    assert [t["id"] for t in teams] == ["eng"]
    assert "eng" in tg(db_url, "keys", "teams").stdout


def test_show_reports_the_spend_of_the_period(db_url: str, engine: Engine) -> None:
    tg(db_url, "keys", "team", "eng", "--budget-usd", "1")
    key = created(db_url, "--name", "svc", "--team", "eng", "--budget-usd", "0.5")
    insert_batch(engine, [row(key["id"], "eng", "0.125"), row("someone-else", "eng", "0.25")])
    shown = json.loads(tg(db_url, "keys", "show", key["id"], "--json").stdout)
    assert shown["budget"]["spent_usd"] == 0.125
    assert shown["budget"]["left_usd"] == 0.375
    assert shown["team_budget"]["spent_usd"] == 0.375
    assert "spent $0.125000" in tg(db_url, "keys", "show", key["id"]).stdout


def test_routings_own_calls_are_no_budgets_spend(db_url: str, engine: Engine) -> None:
    """Shadow, judge and labelling rows carry the caller's key and team (for the report), but no
    budget pays for them: the live counters never charge them, so a period read afresh from the
    ledger must not either (it did: a replica's fresh read jumped by the overhead). A canary
    arm's client request is the key's own spend."""
    tg(db_url, "keys", "team", "eng", "--budget-usd", "1")
    key = created(db_url, "--name", "svc", "--team", "eng", "--budget-usd", "0.5")
    own = [
        row(key["id"], "eng", "0.125"),
        replace(row(key["id"], "eng", "0.0625"), canary_arm="candidate"),
    ]
    overhead = [
        replace(row(key["id"], "eng", "0.25"), canary_arm=arm)
        for arm in ("shadow", "judge", "label_strong", "label_judge")
    ]
    insert_batch(engine, [*own, *overhead])
    shown = json.loads(tg(db_url, "keys", "show", key["id"], "--json").stdout)
    assert shown["budget"]["spent_usd"] == 0.1875
    assert shown["team_budget"]["spent_usd"] == 0.1875


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("keys", "create", "--name", "x", "--team", "nope"), "no team 'nope'"),
        (("keys", "create", "--name", "x", "--expires", "3x"), "--expires"),
        (("keys", "create", "--name", "x", "--budget-period", "year"), "budget period"),
        (("keys", "create", "--name", "x", "--rpm", "0"), "rpm must be 1 or more"),
        (("keys", "create", "--name", "x", "--budget-usd", "lots"), "--budget-usd"),
        (("keys", "create", "--name", "x", "--budget-usd", "-1"), "budget_usd"),
        (("keys", "create", "--name", "x", "--on-exhausted", "panic"), "on_exhausted"),
        (("keys", "create", "--name", ""), "name"),
        (("keys", "show", "vk-nope"), "no key 'vk-nope'"),
        (("keys", "rotate", "vk-nope"), "no key 'vk-nope'"),
        (("keys", "revoke", "vk-nope"), "no key 'vk-nope'"),
        (("keys", "update", "vk-nope", "--rpm", "3"), "no key 'vk-nope'"),
        (("keys", "team", "t" * 65), "1 to 64 characters"),
        (("keys", "create", "--name", "x", "--expires", "99999999999d"), "--expires"),
        (("keys", "create", "--name", "x", "--expires", "9999999d"), "longer than 100 years"),
        # A lifetime of nothing or less is an expiry already past: the key could never be used.
        (("keys", "create", "--name", "x", "--expires=-1d"), "--expires: '-1d' is already past"),
        (("keys", "create", "--name", "x", "--expires", "0h"), "--expires: '0h' is already past"),
        (("keys", "update", "vk-nope", "--expires=-30m"), "--expires: '-30m' is already past"),
        (("keys", "create", "--name", "x", "--rpm", str(2**31)), "rpm must be at most"),
        (("keys", "team", "t", "--budget-usd", "1e9"), "budget_usd must be below"),
    ],
)
def test_mistakes_exit_2_with_one_line(db_url: str, args: tuple[str, ...], says: str) -> None:
    result = tg(db_url, *args, code=2)
    assert says in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)


ROUTED = """
version: 1
backends:
  small: {type: fake, model: s}
  big: {type: fake, model: b}
tiers:
  - {name: cheap, max_score: 0.5, backends: [small]}
  - {name: strong, backends: [big]}
routes:
  search: {}
  batch: {tier: cheap}
default_route: search
"""


def test_routes_must_be_the_policys_routes_or_backends(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A misspelt route would make a key that can call nothing: refused (exit 2, one line
    naming it and every valid name of the policy in TIERGATE_POLICY), and nothing is written."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(ROUTED)
    env = {"TIERGATE_DATABASE_URL": db_url, "TIERGATE_POLICY": str(policy)}

    def keys(*args: str) -> Result:
        return runner.invoke(app, ["keys", *args], env=env)

    refused = keys("create", "--name", "x", "--routes", "search,serch")
    assert refused.exit_code == 2, refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line == (
        f"error: --routes: unknown route 'serch' in the policy {policy}: use routes or "
        f"backends (valid: search, batch, small, big)"
    )
    assert digests(engine) == set()
    made = keys("create", "--name", "x", "--routes", "search,big", "--json")
    assert made.exit_code == 0, made.stderr
    key = json.loads(made.stdout)
    assert store.load(engine)[store.digest(key["key"])].routes == frozenset({"search", "big"})
    typo = keys("update", key["id"], "--routes", "batch,auto")
    assert typo.exit_code == 2
    assert "unknown route 'auto'" in typo.stderr
    assert store.load(engine)[store.digest(key["key"])].routes == frozenset({"search", "big"})

    policy.write_text(ROUTED.replace("tiers:", "tierz:"))
    broken = keys("update", key["id"], "--routes", "batch")
    assert broken.exit_code == 2
    assert f"tiergate policy check {policy}" in broken.stderr
    assert "Traceback" not in broken.stderr + broken.stdout


def test_an_unmigrated_database_names_db_upgrade(tmp_path: Path) -> None:
    result = tg(f"sqlite:///{tmp_path / 'empty.db'}", "keys", "list", code=1)
    assert "tiergate db upgrade" in result.stderr


def test_the_installed_command_exits_2_without_a_traceback(db_url: str, tmp_path: Path) -> None:
    """The real entry point, in a subprocess: the error is one line, the exit code 2."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from gateway.cli.main import main; main()"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env["TIERGATE_DATABASE_URL"] = db_url
    done = subprocess.run(
        [*command, "keys", "create", "--name", "x", "--expires", "soon"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --expires: 'soon' is not a duration: write a number and m, h, d or w (30d)"
    ]


def test_the_database_never_holds_the_key(db_url: str, engine: Engine) -> None:
    """Created and rotated keys: no column of gov_keys holds one (only its digest and the
    first characters)."""
    first = created(db_url, "--name", "svc")
    second = json.loads(tg(db_url, "keys", "rotate", first["id"], "--json").stdout)
    with engine.connect() as conn:
        rows = conn.execute(select(KeyRow.__table__)).mappings().all()
    for secret in (first["key"], second["key"]):
        for db_row in rows:
            for value in db_row.values():
                assert secret not in str(value)
        assert key_digest(secret).hex() != secret


def row(key_id: str, team: str | None, cost: str) -> LedgerEntry:
    return LedgerEntry(
        id=str(uuid.uuid4()),
        ts=datetime.now(UTC),
        key_id=key_id,
        policy_hash="0123456789abcdef",
        route="auto",
        tier="cheap",
        backend="small",
        model="small-model",
        score=0.2,
        cache="off",
        canary_arm=None,
        status=200,
        error_class=None,
        attempts=1,
        fallback_chain="small",
        stream=False,
        prompt_tokens=100,
        completion_tokens=10,
        cached_tokens=0,
        usage_estimated=False,
        latency_ms=10.0,
        ttft_ms=None,
        server_ms=None,
        load_ms=None,
        cost_usd=Decimal(cost),
        cost_source="policy",
        baseline_cost_usd=Decimal(cost) * 2,
        team=team,
    )


def test_report_by_team_and_for_one_team(db_url: str, engine: Engine) -> None:
    insert_batch(
        engine,
        [row("vk-a", "eng", "0.1"), row("vk-b", "eng", "0.2"), row("app1", None, "0.4"),
         row("vk-c", "ops", "0.8")],
    )  # fmt: skip
    by_team = json.loads(tg(db_url, "report", "--by", "team", "--format", "json").stdout)
    groups = {g["key"]: (g["requests"], g["cost_usd"]) for g in by_team["groups"]}
    assert groups == {"-": (1, 0.4), "eng": (2, pytest.approx(0.3)), "ops": (1, 0.8)}
    eng = json.loads(
        tg(db_url, "report", "--team", "eng", "--by", "key", "--format", "json").stdout
    )
    assert eng["team"] == "eng"
    assert eng["totals"]["requests"] == 2
    assert [g["key"] for g in eng["groups"]] == ["vk-a", "vk-b"]
    table = tg(db_url, "report", "--by", "team").stdout
    assert "eng" in table
    assert "ops" in table


def test_report_for_a_team_without_requests_yet_is_empty_not_an_error(db_url: str) -> None:
    """A team made with `keys team` is known before its first request: an empty report; a
    name no team has is a one-line error (exit 2) naming the known ones."""
    tg(db_url, "keys", "team", "fresh")
    empty = json.loads(tg(db_url, "report", "--team", "fresh", "--format", "json").stdout)
    assert empty["totals"]["requests"] == 0
    wrong = tg(db_url, "report", "--team", "frsh", code=2)
    assert wrong.stderr.startswith("error: --team: no team 'frsh'")
    assert "known: fresh" in wrong.stderr


def test_names_are_shown_as_written_not_as_markup(db_url: str) -> None:
    """Names are the user's: rich markup in them is printed, not applied (nor an error)."""
    tg(db_url, "keys", "team", "[red]ops[/red]")
    key = created(db_url, "--name", "[bold]svc[/", "--team", "[red]ops[/red]")
    out = tg(db_url, "keys", "list").stdout
    assert "[bold]svc[/" in out
    assert "[red]ops[/red]" in out
    assert "[bold]svc[/" in tg(db_url, "keys", "revoke", key["id"]).stdout
    assert "[red]ops[/red]" in tg(db_url, "keys", "teams").stdout

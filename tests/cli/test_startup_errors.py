"""What an operator sees when a ``TIERGATE_*`` value cannot be used: one line,
``error: <VARIABLE>: <what is wrong and what to do>``, and a non-zero exit, before anything
starts; never a traceback. Each case runs the installed ``tiergate`` as a real process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from gateway.environment import is_known_variable, unknown_variables
from gateway.ledger.db import head_revision, make_engine, upgrade
from gateway.settings import Settings
from tests.cli.test_cli import FAKES, _env, tiergate, write
from tests.http.live_server import Server, fake_policy

SECRET = "s3cret-pw"


def _ledger_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A ledger and an outbox of this test's own, plus ``extra``."""
    own = {
        "TIERGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "TIERGATE_OUTBOX_PATH": str(tmp_path / "outbox.db"),
    }
    return _env(**{**own, **extra})


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (besides JSON log lines), and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write(tmp_path / "fakes.yaml", FAKES)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another listener holds (SO_REUSEADDR, as servers set it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        "command",
        [["serve"], ["db", "upgrade"], ["report"], ["keys", "list"]],
        ids=["serve", "db-upgrade", "report", "keys"],
    )
    @pytest.mark.parametrize("url", [f"foo://admin:{SECRET}@db.example/x", "notaurl"])
    def test_unknown_scheme_is_one_line_naming_the_variable(
        self, tmp_path: Path, policy: Path, command: list[str], url: str
    ) -> None:
        """Every command that reads the ledger refuses the URL the same way: exit 2, the
        variable, the accepted forms, never the password."""
        env = _ledger_env(tmp_path, TIERGATE_DATABASE_URL=url, TIERGATE_POLICY=str(policy))
        result = tiergate(*command, env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_DATABASE_URL: ")
        assert "sqlite:///" in line
        assert "postgresql://" in line
        assert SECRET not in result.stderr + result.stdout

    def test_heroku_postgres_scheme_serves_and_logs_the_ledger_masked(self, tmp_path: Path) -> None:
        """``postgres://`` is read as ``postgresql://``: serve starts (the database is not
        reachable, so rows go to the outbox) and gateway_started names the ledger, password
        masked; the password is nowhere in the log."""
        source = tmp_path / "policy.yaml"
        source.write_text(fake_policy())
        url = f"postgres://tiergate:{SECRET}@127.0.0.1:1/ledger"
        server = Server(source, watch=False, env={"TIERGATE_DATABASE_URL": url})
        try:
            started = server.wait_for("gateway_started")
        finally:
            server.stop()
        assert started["ledger"] == "postgresql://tiergate:***@127.0.0.1:1/ledger"
        assert SECRET not in server.log()

    def test_embedded_ledger_is_named_in_gateway_started(self, tmp_path: Path) -> None:
        source = tmp_path / "policy.yaml"
        source.write_text(fake_policy())
        server = Server(source, watch=False)
        try:
            started = server.wait_for("gateway_started")
        finally:
            server.stop()
        assert started["ledger"] == f"sqlite:///{tmp_path / 'ledger.db'}"

    def test_settings_keep_the_password_out_of_the_error(self) -> None:
        """The validation error (what a traceback would show) never repeats the rejected URL."""
        with pytest.raises(ValidationError) as caught:
            Settings(database_url=SecretStr(f"mysql://root:{SECRET}@db/x"))
        assert SECRET not in str(caught.value)
        assert "use sqlite:///" in str(caught.value)
        with pytest.raises(ValidationError) as bad_port:
            Settings(redis_url=SecretStr(f"redis://:{SECRET}@cache:port/0"))
        assert SECRET not in str(bad_port.value)

    def test_postgres_and_postgresql_forms(self) -> None:
        """The Heroku form becomes SQLAlchemy's; the shipped forms pass unchanged."""
        for given, read in [
            ("postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d"),
            ("postgres+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
            ("postgresql://u@h/d", "postgresql://u@h/d"),
            ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
            ("sqlite:////var/lib/tiergate/ledger.db", "sqlite:////var/lib/tiergate/ledger.db"),
        ]:
            assert Settings(database_url=SecretStr(given)).ledger_url() == read


class TestRedisUrl:
    def test_not_a_url_is_one_line_naming_the_variable(self, tmp_path: Path, policy: Path) -> None:
        """Was: uvicorn's traceback (ValueError from redis-py) and exit 3."""
        env = _ledger_env(tmp_path, TIERGATE_REDIS_URL="notaurl")
        result = tiergate("serve", "--policy", policy, "--port", "0", env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_REDIS_URL: ")
        assert "redis://" in line


class TestOutboxMaxBytes:
    @pytest.mark.parametrize("value", ["half the disk", "1000"])
    def test_an_unusable_bound_is_one_line_naming_the_variable(
        self, tmp_path: Path, policy: Path, value: str
    ) -> None:
        """Not a size, or too small to hold more than a few rows: exit 2 before anything
        starts, naming the variable and what it takes."""
        env = _ledger_env(tmp_path, TIERGATE_OUTBOX_MAX_BYTES=value)
        result = tiergate("serve", "--policy", policy, "--port", "0", env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_OUTBOX_MAX_BYTES: ")
        assert "512MiB" in line  # what the default is, or a size it takes


class TestLedgerSchema:
    def test_a_schema_newer_and_incompatible_is_one_line_saying_what_to_do(
        self, tmp_path: Path, policy: Path
    ) -> None:
        """A ledger a newer tiergate migrated (a revision this one does not know) with no
        record that it takes this code: one line naming the newer image and the downgrade, exit
        1. Was: a "Can't locate revision" traceback from the embedded SQLite's own upgrade (and, on
        PostgreSQL, "run `tiergate db upgrade`", which then failed the same way)."""
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        finally:
            engine.dispose()
        result = tiergate("serve", "--policy", policy, "--port", "0", env=_ledger_env(tmp_path))
        assert result.returncode == 1, result.stderr
        line = _one_error_line(result)
        head = head_revision(url)
        assert line.startswith(
            f"error: the ledger database is at revision 9999, newer than this gateway ({head})"
        )
        assert f"`tiergate db downgrade {head}`" in line


class TestLocalPaths:
    @pytest.fixture
    def blocker(self, tmp_path: Path) -> Path:
        """A plain file: no folder can be made below it."""
        path = tmp_path / "a-file"
        path.write_text("")
        return path

    def test_outbox_path_under_a_file(self, tmp_path: Path, policy: Path, blocker: Path) -> None:
        """Was: a ~70-line FileNotFoundError traceback from the server's start, exit 3."""
        env = _ledger_env(tmp_path, TIERGATE_OUTBOX_PATH=str(blocker / "outbox.db"))
        result = tiergate("serve", "--policy", policy, "--port", "0", env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_OUTBOX_PATH: ")
        assert str(blocker) in line
        assert "a file of that name is in the way" in line

    def test_outbox_path_that_is_a_folder(self, tmp_path: Path, policy: Path) -> None:
        env = _ledger_env(tmp_path, TIERGATE_OUTBOX_PATH=str(tmp_path))
        result = tiergate("serve", "--policy", policy, "--port", "0", env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_OUTBOX_PATH: ")
        assert "is a folder" in line

    def test_journal_dir_under_a_file(self, tmp_path: Path, policy: Path, blocker: Path) -> None:
        env = _ledger_env(tmp_path, TIERGATE_JOURNAL_DIR=str(blocker / "journal"))
        result = tiergate("serve", "--policy", policy, "--port", "0", env=env)
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result)
        assert line.startswith("error: TIERGATE_JOURNAL_DIR: ")
        assert str(blocker / "journal") in line


class TestPortInUse:
    def _serve(
        self, tmp_path: Path, policy: Path, *args: str, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return tiergate("serve", "--policy", policy, *args, env=_ledger_env(tmp_path, **env))

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_main_port(self, tmp_path: Path, policy: Path, held_port: int, workers: str) -> None:
        """Was: gateway_started, gateway_stopped and exit 3 (one process) or a traceback
        (workers), never saying why. Now the one line, before the gateway starts anything."""
        result = self._serve(tmp_path, policy, "--port", str(held_port), "--workers", workers)
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result) == (
            f"error: port {held_port} is already in use (TIERGATE_PORT / --port); stop the "
            f"other process or pick another port"
        )
        assert "gateway_started" not in result.stderr

    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_ops_port(self, tmp_path: Path, policy: Path, held_port: int, workers: str) -> None:
        """Was: ``OSError: [Errno 98] Address already in use`` in a traceback."""
        free = _free_port()
        result = self._serve(
            tmp_path,
            policy,
            "--port",
            str(free),
            "--workers",
            workers,
            TIERGATE_OPS_PORT=str(held_port),
        )
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result) == (
            f"error: port {held_port} is already in use (TIERGATE_OPS_PORT); stop the other "
            f"process or pick another port"
        )
        assert "gateway_started" not in result.stderr
        # The main port, bound first, was let go: it can be bound again at once.
        with socket.socket() as again:
            again.bind(("127.0.0.1", free))

    @pytest.mark.parametrize("variable", ["TIERGATE_PORT / --port", "TIERGATE_OPS_PORT"])
    def test_a_port_taken_after_the_parents_check(
        self, tmp_path: Path, policy: Path, variable: str
    ) -> None:
        """With ``--workers``, the parent checks and holds the ports without listening; a
        socket with SO_REUSEADDR may still take one to listen before the workers bind (Linux
        lets it: nothing listened there). Taken here at that exact step (just before the
        parent starts its first worker), so the real workers meet it. Was: each worker died
        with a ``BindError`` traceback and was restarted into the same error every second,
        forever. Now the one line, and the whole server exits."""
        main, ops = _free_port(), _free_port()
        taken = main if variable.startswith("TIERGATE_PORT") else ops
        script = f"""
import socket
from gateway.cli.main import main
from gateway.workers import Supervisor

start, held = Supervisor._start, []

def _start(self, port):
    if not held:  # the port checked free and held (not listening) by the parent: take it
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", {taken}))
        sock.listen()
        held.append(sock)
    return start(self, port)

Supervisor._start = _start
main()
"""
        env = _ledger_env(tmp_path, TIERGATE_OPS_PORT=str(ops), TIERGATE_HOST="127.0.0.1")
        command = [sys.executable, "-c", script, "serve", "--policy", str(policy)]
        result = subprocess.run(
            [*command, "--port", str(main), "--workers", "2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,  # the old code restarted its workers into the error until killed
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result) == (
            f"error: port {taken} is already in use ({variable}); stop the other process or "
            f"pick another port"
        )
        assert "worker_died" not in result.stderr  # not restarted into the same conflict


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestUnknownVariables:
    def test_a_misspelt_setting_is_a_warning_naming_the_intended_one(self, tmp_path: Path) -> None:
        """A typo used to leave the gateway on its default ledger in silence. Now one warning
        log line (JSON) per unknown variable, with the closest setting; the tooling's and the
        policy's own variables are not flagged."""
        source = write(
            tmp_path / "remote.yaml",
            FAKES.replace(
                "b: {type: fake}",
                "b: {type: remote, model: openai/gpt-4o-mini, api_key_env: TIERGATE_UPSTREAM_KEY}",
            ),
        )
        env = _ledger_env(
            tmp_path,
            TIERGATE_POLICY=str(source),
            TIERGATE_DATABSE_URL="postgresql://typo@nowhere/x",
            TIERGATE_COLOUR="blue",
            TIERGATE_UPSTREAM_KEY="sk-not-a-real-key-0123456789",
            TIERGATE_MIGRATE="1",
            TIERGATE_CLUSTER_DIR=str(tmp_path),
        )
        result = tiergate("db", "upgrade", env=env)
        assert result.returncode == 0, result.stderr
        warnings = {e["variable"]: e for e in _log_events(result.stderr)}
        assert set(warnings) == {"TIERGATE_DATABSE_URL", "TIERGATE_COLOUR"}
        typo = warnings["TIERGATE_DATABSE_URL"]
        assert (typo["event"], typo["level"]) == ("unknown_setting", "warning")
        assert typo["meant"] == "TIERGATE_DATABASE_URL"
        assert "did you mean TIERGATE_DATABASE_URL" in typo["detail"]
        assert warnings["TIERGATE_COLOUR"]["meant"] is None

    def test_serve_warns_before_anything_else(
        self, tmp_path: Path, policy: Path, held_port: int
    ) -> None:
        """serve says it too (here it then stops at the taken port, which is quicker than a
        whole start)."""
        env = _ledger_env(tmp_path, TIERGATE_WATCH_POLCY="false")
        result = tiergate("serve", "--policy", policy, "--port", str(held_port), env=env)
        assert result.returncode == 2
        [warning] = _log_events(result.stderr)
        assert warning["event"] == "unknown_setting"
        assert warning["meant"] == "TIERGATE_WATCH_POLICY"

    def test_every_variable_the_code_reads_is_known(self) -> None:
        """Each ``TIERGATE_*`` name in the gateway, the adapters, the deployment files, the
        Makefile and the README is a setting or a known tooling variable, so none is flagged
        (and the README cannot drift to a name that nothing reads)."""
        import re

        repo = Path(__file__).resolve().parents[2]
        files = [repo / "README.md", repo / "Makefile"]
        for folder in ("gateway", "adapters", "deploy", "bench"):
            files += [
                p
                for p in (repo / folder).rglob("*")
                if p.is_file()
                and p.suffix in {".py", ".sh", ".yaml", ".yml", ".md", ".env", ""}
                and "results" not in p.parts
            ]
        names: dict[str, Path] = {}
        for path in files:
            text = path.read_text(errors="ignore")
            for match in re.finditer(r"TIERGATE_[A-Z0-9_]*[A-Z0-9](_(?![A-Z0-9]))?", text):
                if not match[1]:  # TIERGATE_CLUSTER_*: a family, not a name
                    names.setdefault(match[0], path)
        assert "TIERGATE_DATABASE_URL" in names
        unknown = {
            n: str(p.relative_to(repo)) for n, p in names.items() if not is_known_variable(n)
        }
        assert unknown == {}

    def test_every_setting_is_in_the_readme_configuration(self) -> None:
        """The README's configuration paragraph names every setting (without the prefix)."""
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        section = readme.split("## Configuration and security", 1)[1].split("\n## ", 1)[0]
        missing = [n for n in Settings.model_fields if f"`{n.upper()}`" not in section]
        assert missing == []

    def test_lowercase_and_close_names(self) -> None:
        """Settings are read in any case, so names are compared that way too; a suggestion is
        made only when a setting is close."""
        found = unknown_variables(
            {
                "tiergate_port": "1",
                "TIERGATE_POLCY": "x",
                "TIERGATE_FOO": "1",
                "OTHER": "1",
                "TIERGATE_TEST_FREEZE_S": "1",
            }
        )
        assert found == [("TIERGATE_FOO", None), ("TIERGATE_POLCY", "TIERGATE_POLICY")]


def test_bad_setting_without_a_field_is_one_line() -> None:
    """A rule about two settings (the ops port equal to the port) says so, without a bare
    ``TIERGATE_:`` prefix or pydantic's ``Value error,``."""
    result = tiergate(
        "serve", "--port", "18639", env=_env(TIERGATE_OPS_PORT="18639", TIERGATE_LEDGER="false")
    )
    assert result.returncode == 2
    assert _one_error_line(result) == "error: TIERGATE_OPS_PORT must differ from TIERGATE_PORT"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("app:sk-one,other:sk-one", "the key of 'other' is listed twice (also as 'app')"),
        ("app:sk-one,app:sk-two", "key id 'app' is given to two keys"),
        ("app:sk-two,admin:sk-one", "key id 'admin' is the admin key's"),
    ],
    ids=["same-key", "same-id", "admin-id"],
)
def test_api_keys_that_cannot_be_told_apart_are_refused(
    tmp_path: Path, policy: Path, keys: str, expected: str
) -> None:
    """Two keys under one id would share one ledger identity and one set of limits; one key
    under two ids would take whichever came last. Either is a typo: refused at start. A client
    key under the admin key's id would pass for it (its ledger rows, feedback on any request)."""
    result = tiergate(
        "serve",
        "--port",
        "18638",
        "--policy",
        str(policy),
        env=_env(TIERGATE_API_KEYS=keys, TIERGATE_LEDGER="false"),
    )
    assert result.returncode == 2
    line = _one_error_line(result)
    assert line.startswith("error: TIERGATE_API_KEYS: ")
    assert expected in line
    assert "sk-one" not in line  # the key itself is a secret
    assert "sk-two" not in line


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TIERGATE_PORT", "70000", "Input should be less than or equal to 65535"),
        ("TIERGATE_PORT", "eighty", "Input should be a valid integer"),
        ("TIERGATE_MAX_BODY_BYTES", "-5", "Input should be greater than or equal to 1024"),
        (
            "TIERGATE_MAX_BODY_BYTES",
            "99999999999999999999999",
            "Input should be less than or equal to 1073741824",
        ),
        ("TIERGATE_GOVERNANCE_TIMEOUT_MS", "inf", "Input should be less than or equal to 60000"),
        ("TIERGATE_GOVERNANCE_TIMEOUT_MS", "3600000", "Input should be less than or equal to"),
        ("TIERGATE_GOVERNANCE_TIMEOUT_MS", "nan", "Input should be less than or equal to 60000"),
    ],
    ids=["port-range", "port-word", "body-negative", "body-huge", "gov-inf", "gov-hour", "gov-nan"],
)
def test_a_number_out_of_its_range_is_one_line(
    tmp_path: Path, policy: Path, name: str, value: str, expected: str
) -> None:
    """A bound that is no bound (``inf``, an hour for a Redis call that holds requests) is
    refused at start like a port out of range: one line naming the variable, exit 2 (the
    governance timeout took ``inf`` and served with no bound on Redis at all)."""
    result = tiergate(
        "serve", env=_ledger_env(tmp_path, TIERGATE_POLICY=str(policy), **{name: value})
    )
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result).startswith(f"error: {name}: {expected}")


def test_a_bad_command_line_option_is_named_as_the_option(tmp_path: Path, policy: Path) -> None:
    """``serve --port 70000`` names ``--port``, which the operator typed, not the variable it
    overrides (before: ``TIERGATE_PORT``, set nowhere)."""
    result = tiergate(
        "serve", "--port", "70000", env=_ledger_env(tmp_path, TIERGATE_POLICY=str(policy))
    )
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result).startswith(
        "error: --port: Input should be less than or equal to 65535"
    )

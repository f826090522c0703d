"""``tiergate canary status | promote | rollback`` on the ledger database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from gateway.canary.events import CanaryEvent, latest_event, record_event
from gateway.cli.main import app
from gateway.ledger.db import make_engine, upgrade

POLICY = """
version: 1
backends:
  small: {type: fake}
  cand: {type: fake}
tiers:
  - {name: cheap, backends: [small]}
canary: {name: c1, candidate: cand, tier: cheap, mode: split, percent: 10}
"""


def _setup(tmp_path: Path) -> tuple[Path, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return policy, url


def _run(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["canary", *args], env={"TIERGATE_DATABASE_URL": url})
    return result.exit_code, result.output


def test_status_promote_and_rollback(tmp_path: Path) -> None:
    """Before any gateway ran it: status says so and a decision is refused. Once started:
    status shows the state and arms, promote and rollback are recorded (actor cli), a second
    rollback of a rolled-back canary is refused, and a restart starts it again (once)."""
    policy, url = _setup(tmp_path)
    code, out = _run(url, "status", "--policy", str(policy), "--format", "json")
    assert code == 0, out
    assert json.loads(out)["status"] == "not started"
    code, out = _run(url, "promote", "--policy", str(policy))
    assert code == 1
    assert "has not started" in out

    engine = make_engine(url)
    try:
        start = CanaryEvent(datetime.now(UTC), "c1", "cand", "start", "auto", "split 10%", {})
        record_event(engine, start)
        code, out = _run(url, "status", "--policy", str(policy), "--format", "json")
        assert code == 0, out
        status = json.loads(out)
        assert (status["status"], status["candidate_arm"]) == ("running", "candidate")
        assert status["arms"]["candidate"]["requests"] == 0
        assert status["verdict"]["outcome"] == "wait"

        code, out = _run(url, "promote", "--policy", str(policy), "--reason", "ship it")
        assert code == 0, out
        latest = latest_event(engine, "c1", "cand")
        assert latest is not None
        assert (latest.action, latest.actor, latest.reason) == ("promote", "cli", "ship it")

        code, out = _run(url, "rollback", "--policy", str(policy))
        assert code == 0, out
        code, out = _run(url, "rollback", "--policy", str(policy))
        assert code == 1
        assert "rolled_back" in out
        code, out = _run(url, "status", "--policy", str(policy))
        assert code == 0
        assert "rolled_back" in out
        assert "per arm" in out

        code, out = _run(url, "restart", "--policy", str(policy), "--reason", "new build")
        assert code == 0, out
        latest = latest_event(engine, "c1", "cand")
        assert latest is not None
        assert (latest.action, latest.actor, latest.reason) == ("start", "cli", "new build")
        code, out = _run(url, "restart", "--policy", str(policy))
        assert code == 1
        assert "running: cannot restart it" in out
    finally:
        engine.dispose()


def test_a_policy_without_canary_is_an_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.split("canary:")[0])
    code, out = _run(f"sqlite:///{tmp_path / 'l.db'}", "status", "--policy", str(policy))
    assert code == 1
    assert "has no `canary:` block" in out

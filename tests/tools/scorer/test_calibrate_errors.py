"""``tiergate calibrate`` refuses a calibration it cannot make with the reason and exit code 2,
whichever way the thresholds were asked for, and leaves the policy as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app

POLICY = (
    "version: 1\n"
    "backends:\n  a: {type: fake}\n  b: {type: fake}\n  c: {type: fake}\n"
    "tiers:\n"
    "  - {name: tiny, backends: [a], max_score: 0.2}\n"
    "  - {name: local, backends: [b], max_score: 0.6}\n"
    "  - {name: strong, backends: [c]}\n"
)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--tier-shares", "tiny=lots"], "error: --tier-shares: 'lots' is not a number"),
        (["--tier-shares", "tiny"], "error: --tier-shares: 'tiny' is not NAME=SHARE"),
    ],
)
def test_shares_it_cannot_use_end_with_the_reason(
    tmp_path: Path, args: list[str], reason: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    result = CliRunner().invoke(app, ["calibrate", "--policy", str(policy), *args])
    assert result.exit_code == 2
    assert reason in result.output
    assert policy.read_text() == POLICY

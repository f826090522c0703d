"""The README's `tiergate policy check` examples are what the program prints: the default
policy's hash, and both problems of its broken example in one run."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli.test_cli import DEFAULT_POLICY, REPO, _env, tiergate


def _example(command: str) -> list[str]:
    """The lines the README shows under ``$ <command>``, up to the next blank line."""
    readme = (REPO / "README.md").read_text()
    block = readme.split(f"$ {command}\n", 1)[1]
    return block.split("\n\n", 1)[0].splitlines()


def test_default_policy_check_matches_the_readme() -> None:
    """Same lines, same hash (it changes with every edit of policies/default.yaml: then
    update the README)."""
    env = {k: v for k, v in _env().items() if k != "OPENAI_API_KEY"}  # the README's note
    result = tiergate("policy", "check", "policies/default.yaml", env=env)
    assert result.returncode == 0, result.stderr
    shown = _example("tiergate policy check policies/default.yaml")
    assert result.stderr.splitlines() + result.stdout.splitlines() == shown


def test_broken_example_reports_both_problems_as_the_readme_shows(tmp_path: Path) -> None:
    """A misspelt field and an unknown backend together: both lines at once (the backend's
    used to appear only once the field was fixed)."""
    shown = _example("tiergate policy check broken.yaml")
    assert len(shown) == 2
    text = DEFAULT_POLICY.read_text()
    assert re.search(r"^\s+n_ctx:", text, re.MULTILINE)
    broken = text.replace("n_ctx:", "n_ctxx:", 1).replace(
        "backends: [local]", "backends: [locl]", 1
    )
    (tmp_path / "broken.yaml").write_text(broken)
    result = tiergate("policy", "check", "broken.yaml", env=_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == shown

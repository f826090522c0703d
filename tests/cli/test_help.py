"""``tiergate --help`` as a person reads it, from the installed program at 100 columns: no
``<bool>`` beside a flag (it takes no value), and each command's row wrapped only where the
panel is full, never at a line break of its docstring."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.cli.test_cli import _env, tiergate

# Commands whose docstring's first paragraph spans several lines.
LISTED = ("train-scorer", "calibrate", "cascade-calibrate", "fit", "eval-models")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def help_text(*args: str) -> str:
    result = tiergate(*args, "--help", env=_env(COLUMNS="100", NO_COLOR="1", TERM="dumb"))
    assert result.returncode == 0, result.stderr
    return ANSI.sub("", result.stdout)


def command_rows(text: str) -> dict[str, list[str]]:
    """The Commands panel: each command's description, as its lines."""
    panel = text.split("─ Commands ─", 1)[1].split("╰", 1)[0]
    rows: dict[str, list[str]] = {}
    current: list[str] = []
    for line in panel.splitlines()[1:]:
        inner = line.strip().strip("│").rstrip()
        if not inner.strip():
            continue
        name, _, rest = inner.strip().partition(" ")
        if not inner.startswith("  "):  # a command's first line: its name, then the text
            current = rows[name] = [rest.strip()]
        else:
            current.append(inner.strip())
    return rows


@pytest.mark.parametrize("args", [(), ("fit",), ("outbox", "list")])
def test_flags_show_no_bool_type(args: tuple[str, ...]) -> None:
    text = help_text(*args)
    assert "--help" in text
    assert "<bool>" not in text, text


def test_command_rows_wrap_only_where_the_panel_is_full() -> None:
    """A row goes on to its next line only when the next word would not fit on this one
    (before: train-scorer's row broke after "give the same", "bytes." alone below)."""
    rows = command_rows(help_text())
    assert set(LISTED) <= set(rows)
    widest = max(len(line) for lines in rows.values() for line in lines)
    for name, lines in rows.items():
        for line, after in itertools.pairwise(lines):
            word = after.split()[0]
            assert len(line) + 1 + len(word) > widest, (name, line, after)
    assert " ".join(rows["train-scorer"]).endswith("the same files give the same bytes.")

"""``tiergate eval-models``: the same cases through several backends, side by side."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.config import FakeConfig, FakeStep
from adapters.fake import FakeBackend
from gateway.tools.eval_models import Case, CaseFileError, read_cases, run_backend

CASES: list[dict[str, object]] = [
    {"id": "capital", "prompt": "What is the capital of France?", "keywords": ["Paris"]},
    {
        "id": "sum",
        "messages": [{"role": "user", "content": "What is 2+2? Digits only."}],
        "exact": "4",
    },
    {"id": "colours", "prompt": "Name two primary colours.", "keywords": ["red", "blue"]},
]

POLICY = """
version: 1
backends:
  good:
    type: fake
    script:
      - {reply: "The capital of France is Paris."}
      - {reply: " 4. "}
      - {reply: "Red and blue."}
  weak:
    type: fake
    script:
      - {reply: "I think it is Lyon."}
      - {reply: "four"}
      - {reply: "Blue, and maybe green."}
tiers:
  - {name: only, backends: [good, weak]}
"""


def _write_cases(path: Path, cases: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(c) for c in cases) + "\n", encoding="utf-8")
    return path


def test_grading_by_keywords_and_exact_answers() -> None:
    keywords = Case(id="k", prompt="?", keywords=("red", "Blue"))
    assert keywords.grade("BLUE sky, red sun") == 1.0
    assert keywords.grade("blue only") == 0.5
    assert keywords.grade("green") == 0.0
    exact = Case(id="e", prompt="?", exact="4")
    assert exact.grade("  4. ") == 1.0
    assert exact.grade("14") == 0.0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"id": "a", "keywords": ["x"]}, "give either prompt or messages"),
        ({"id": "a", "prompt": "p"}, "give keywords"),
        ({"id": "a", "prompt": "p", "exact": "x", "colour": 1}, "colour"),
        ({"id": "a", "prompt": "p", "exact": "x", "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_case_files_name_the_line_and_field(
    tmp_path: Path, line: dict[str, object], expected: str
) -> None:
    path = _write_cases(tmp_path / "cases.jsonl", [CASES[0], line])
    with pytest.raises(CaseFileError) as caught:
        read_cases(path)
    assert ":2:" in str(caught.value)
    assert expected in str(caught.value)


async def test_a_backend_is_graded_case_by_case(tmp_path: Path) -> None:
    cases = read_cases(_write_cases(tmp_path / "cases.jsonl", CASES))
    script = (
        FakeStep(reply="Paris, of course."),
        FakeStep(error="unavailable"),
        FakeStep(reply="red"),
    )
    backend = FakeBackend("mixed", FakeConfig(type="fake", script=script))
    summary = await run_backend(backend, cases)
    row = summary.row()
    assert [r.quality for r in summary.results] == [1.0, 0.0, 0.5]
    assert summary.results[1].error is not None
    assert (row["cases"], row["passed"], row["errors"]) == (3, 1, 1)
    assert row["quality"] == pytest.approx(0.5)
    assert row["latency_p50_ms"] is not None


def _tiergate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli.main import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_prints_backends_side_by_side(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    cases = _write_cases(tmp_path / "cases.jsonl", CASES)
    table = _tiergate(
        "eval-models",
        "--cases",
        str(cases),
        "--backends",
        "good,weak",
        "--policy",
        str(policy),
        cwd=tmp_path,
    )
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["metric", "good", "weak"]
    cells = {line.split()[0]: line.split()[1:] for line in rows}
    assert cells["quality"] == ["1.0", "0.1667"]  # weak: 0, 0, 1/2 of the keywords
    assert cells["passed"] == ["3/3", "0/3"]
    as_json = _tiergate(
        "eval-models",
        "--cases",
        str(cases),
        "--backends",
        "weak",
        "--policy",
        str(policy),
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert [c["quality"] for c in body["cases"]["weak"]] == [0.0, 0.0, 0.5]


def test_an_unknown_backend_is_named(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    cases = _write_cases(tmp_path / "cases.jsonl", CASES)
    result = _tiergate(
        "eval-models",
        "--cases",
        str(cases),
        "--backends",
        "good,nope",
        "--policy",
        str(policy),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "unknown nope" in result.stderr
    assert "good, weak" in result.stderr

"""``eval-router --loso`` and ``train-scorer --kind v2`` end to end on small temporary files,
and the labels format's sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.base import Message
from gateway.cli.main import app
from gateway.policy import parse_policy
from gateway.tools.scorer.labels import read_labels

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, backends: [weak], max_score: 0.5}
  - {name: strong, backends: [strong]}
scorer: {kind: v2, artifact: v2.json}
"""


def rows(source: str, per: int = 10) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(per):
        hard = n % 2 == 1
        prompt = (
            f"Prove that {n} odd squares sum to a square and derive the formula step by step."
            if hard
            else f"Hi from {source}, day {n}!"
        )
        out.append(
            {
                "id": f"{source}-{n}",
                "prompt": prompt,
                "weak": 0 if hard else 1,
                "strong": 1,
                "models": {"other": 1},  # extra fields are ignored
            }
        )
    return out


@pytest.fixture
def labels(tmp_path: Path) -> list[Path]:
    """Three sources: two named by a field in one file, one by its file's name."""
    mixed = tmp_path / "mixed.jsonl"
    lines = [{**r, "source": "alpha"} for r in rows("alpha")]
    lines += [{**r, "benchmark": "beta"} for r in rows("beta")]
    mixed.write_text("".join(json.dumps(r) + "\n" for r in lines))
    third = tmp_path / "gamma.jsonl"
    third.write_text("".join(json.dumps(r) + "\n" for r in rows("gamma")))
    return [mixed, third]


def test_labels_take_sources_from_a_field_a_benchmark_or_the_file(labels: list[Path]) -> None:
    read = read_labels(labels)
    assert read.sources() == ["alpha", "beta", "gamma"]
    assert {i.group for i in read.items if i.origin == "gamma"} == {"all"}


def test_eval_router_loso_end_to_end(labels: list[Path], tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "loso.json", tmp_path / "loso.md"
    args = ["eval-router", *map(str, labels), "--loso", "--resamples", "40"]
    result = CliRunner().invoke(app, [*args, "--out-json", str(out_json), "--out-md", str(out_md)])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert [f["held_out"] for f in report["folds"]] == ["alpha", "beta", "gamma"]
    for fold in report["folds"]:
        assert fold["held_out"] not in fold["trained_on"]
    names = {r["name"] for g in report["groups"] for r in g["routers"]}
    assert names == {"v2 (LOSO)", "v1 scorer", "prompt length", "random", "oracle"}
    for g in report["groups"]:
        for r in g["routers"]:
            assert r["ci95"][0] <= r["apgr"] <= r["ci95"][1]
    assert report["summary"]["sources"] == 3
    markdown = out_md.read_text()
    assert "leave one source out" in markdown
    assert "held out **alpha**: trained on beta, gamma" in markdown


def test_eval_router_loso_needs_two_sources(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in rows("one")))
    result = CliRunner().invoke(app, ["eval-router", str(one), "--loso", "--resamples", "10"])
    assert result.exit_code == 2
    assert "at least two sources" in result.output


def test_train_scorer_v2_is_reproducible_and_a_policy_loads_it(
    labels: list[Path], tmp_path: Path
) -> None:
    first, second = tmp_path / "v2.json", tmp_path / "again.json"
    for out in (first, second):
        result = CliRunner().invoke(
            app, ["train-scorer", *map(str, labels), "--kind", "v2", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()
    policy = parse_policy(POLICY.encode(), source="p", base_dir=tmp_path)
    assert policy.scorer_kind == "v2"
    hard = policy.score([Message(role="user", content="Prove it step by step: 3 odd.")], None)
    easy = policy.score([Message(role="user", content="Hi from delta, day 4!")], None)
    assert hard.value > easy.value


def test_train_scorer_refuses_an_unknown_kind(labels: list[Path]) -> None:
    result = CliRunner().invoke(app, ["train-scorer", str(labels[0]), "--kind", "v3"])
    assert result.exit_code == 2
    assert "use learned or v2" in result.output

"""``tiergate export-labels``: the shared public sets as labels files that eval-router reads."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import read_labels

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()


def _export(tmp_path: Path, name: str, *extra: str) -> list[dict[str, object]]:
    out = tmp_path / f"{name}-{'-'.join(extra) or 'plain'}.jsonl"
    result = runner.invoke(app, ["export-labels", name, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_routerbench_exports_every_row_in_the_labels_format(tmp_path: Path) -> None:
    rows = _export(tmp_path, "routerbench")
    assert len(rows) == 3164
    assert {r["source"] for r in rows} == {"arc_challenge", "mbpp", "winogrande"}
    assert {r["weak"] for r in rows} <= {0.0, 1.0}
    read = read_labels([tmp_path / "routerbench-plain.jsonl"])
    assert len(read.items) == 3164


def test_a_shuffle_seed_mixes_the_sources_the_same_way_each_time(tmp_path: Path) -> None:
    plain = _export(tmp_path, "alpaca_mixtral")
    once = _export(tmp_path, "alpaca_mixtral", "--shuffle-seed", "0")
    again = _export(tmp_path, "alpaca_mixtral", "--shuffle-seed", "0")
    other = _export(tmp_path, "alpaca_mixtral", "--shuffle-seed", "1")
    assert once == again
    assert once != plain
    assert once != other
    assert sorted(r["id"] for r in once) == sorted(r["id"] for r in plain)  # type: ignore[type-var]
    assert len(plain) == 805


def test_an_unknown_set_names_the_choices(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export-labels", "nope", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2
    assert "routellm, routellm_trainable, routerbench" in result.output


def test_the_trainable_routellm_set_leaves_out_the_overlap_rows(tmp_path: Path) -> None:
    out = tmp_path / "routellm.jsonl"
    result = runner.invoke(app, ["export-labels", "routellm_trainable", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ids = {i.id for i in read_labels([out]).items}
    dropped = sources.training_exclusions(ROOT)
    assert dropped
    assert not ids & dropped
    assert len(ids) == len([i for i in sources.routellm(ROOT).items if i.id not in dropped])
    assert len(ids) < len(sources.routellm(ROOT).items)

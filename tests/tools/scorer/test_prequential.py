"""``eval-router --online``: prequential evaluation, each row scored only from earlier rows'
labels, the same numbers for the same file."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.policy import parse_policy
from gateway.scoring.adaptive import AdaptiveSettings
from gateway.tools.scorer.labels import Labelled, read_labels
from gateway.tools.scorer.prequential import prequential, run_stream
from tests.support.topics import BAKING, NETWORKING, prompts

POLICY = """
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - {name: weak, max_score: 0.5, backends: [weak]}
  - {name: strong, backends: [strong]}
scorer: {kind: adaptive, base: v1}
"""


def stream_file(path: Path, n: int = 120) -> Path:
    """Alternating topics: networking needs the strong model, baking does not."""
    rows = []
    for position, (a, b) in enumerate(
        zip(prompts(NETWORKING, n // 2, seed=5), prompts(BAKING, n // 2, seed=6), strict=True)
    ):
        rows.append({"id": f"n{position}", "prompt": a[0].content, "weak": 0, "strong": 1})
        rows.append({"id": f"b{position}", "prompt": b[0].content, "weak": 1, "strong": 1})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def item(id: str, prompt: str, weak: float, strong: float) -> Labelled:
    from adapters.base import Message

    return Labelled(id, "g", (Message(role="user", content=prompt),), weak, strong)


def test_a_row_is_scored_before_its_own_label_is_known() -> None:
    # The same prompt four times: a label that leaked into its own row's score would move it.
    prompt = "Could you tell me about ingress controllers and node ports?"
    rows = [item(str(k), prompt, 0.0, 1.0) for k in range(4)]
    flipped = [*rows[:2], item("2", prompt, 1.0, 0.0), rows[3]]
    settings = AdaptiveSettings()
    one = run_stream(rows, [0.3] * 4, settings)
    two = run_stream(flipped, [0.3] * 4, settings)
    assert one.given[0] == 0.3  # nothing learned yet: the base score
    assert one.given[:3] == two.given[:3]  # row 2's label changes nothing up to row 2 ...
    assert one.given[3] > two.given[3]  # ... and the row after it
    assert one.given[1] > 0.3  # row 0's label (strong needed) raised row 1


def test_online_eval_learns_the_planted_rule_and_is_reproducible(tmp_path: Path) -> None:
    labels = stream_file(tmp_path / "stream.jsonl")
    policy = parse_policy(POLICY.encode(), source="p.yaml", base_dir=tmp_path)
    items = read_labels([labels]).items
    report = prequential(items, policy)
    assert report == prequential(items, policy)
    assert report["base_scorer"] == "v1"
    assert [q["rows"] for q in report["quarters"]] == [[0, 30], [30, 60], [60, 90], [90, 120]]
    # Half the rows gain from the strong model: the oracle's APGR is 0.75, a random router's 0.5.
    last = report["quarters"][-1]
    assert last["apgr"] == 0.75  # every networking row ranked above every baking row
    assert last["base_apgr"] < 0.65
    assert report["base_apgr"] < 0.65
    assert report["apgr"] > report["base_apgr"] + 0.1


def test_cli_online_writes_apgr_quarters_and_the_base(tmp_path: Path) -> None:
    labels = stream_file(tmp_path / "stream.jsonl", n=40)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    outputs = []
    for name in ("a.json", "b.json"):
        result = CliRunner().invoke(
            app,
            [
                "eval-router",
                str(labels),
                "--online",
                "--policy",
                str(policy),
                "--out-json",
                str(tmp_path / name),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "quarter 4" in result.output
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]
    report = json.loads(outputs[0])
    assert report["labels"] == ["stream.jsonl"]
    assert len(report["quarters"]) == 4
    assert {"apgr", "base_apgr", "quarters", "groups"} <= set(report)

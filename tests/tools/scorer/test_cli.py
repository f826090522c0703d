"""``tiergate eval-router``, ``calibrate`` and ``train-scorer`` end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.tools.scorer.labels import LabelSet

POLICY = """# a comment that must survive calibration
version: 1
backends:
  weak: {type: fake}
  strong: {type: fake}
tiers:
  - name: weak
    backends: [weak]
    max_score: 0.5   # calibrated below
  - {name: strong, backends: [strong]}
scorer: {kind: learned}
"""


@pytest.fixture
def files(tmp_path: Path, routellm: LabelSet) -> tuple[Path, Path]:
    """A labels file of every 50th RouteLLM prompt (~300), plus one contaminated line."""
    labels = tmp_path / "labels.jsonl"
    lines = [
        json.dumps(
            {
                "id": i.id,
                "benchmark": i.group,
                "prompt": i.messages[0].content,
                "weak": i.weak,
                "strong": i.strong,
            }
        )
        for i in routellm.items[::50]
    ]
    lines.append(
        json.dumps({"id": "x", "prompt": "leaked", "weak": 0, "strong": 1, "contaminated": True})
    )
    labels.write_text("\n".join(lines) + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return labels, policy


def test_eval_router_writes_json_markdown_and_png(files: tuple[Path, Path], tmp_path: Path) -> None:
    labels, policy = files
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "eval-router",
            str(labels),
            "--policy",
            str(policy),
            "--kfold",
            "2",
            "--out-json",
            str(out / "r.json"),
            "--out-md",
            str(out / "r.md"),
            "--plot",
            str(out / "r.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "r.json").read_text())
    assert data["contaminated_left_out"] == 1
    assert data["kfold"] == 2
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"gsm8k", "mmlu", "mt_bench"}
    names = [r["name"] for r in groups["mmlu"]["routers"]]
    assert names == ["learned (2-fold CV)", "v1 scorer", "random", "prompt length", "oracle"]
    assert "| oracle |" in (out / "r.md").read_text()
    assert "2-fold cross-validated" in (out / "r.md").read_text()
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_edits_the_threshold_in_place(files: tuple[Path, Path]) -> None:
    labels, policy = files
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--policy",
            str(policy),
            "--labels",
            str(labels),
            "--target-strong-share",
            "0.25",
        ],
    )
    assert result.exit_code == 0, result.output
    text = policy.read_text()
    assert text.startswith("# a comment that must survive calibration")
    assert "max_score: 0.5 " not in text
    assert "# calibrated below" in text
    # 309 prompts: 25 % is 77.25, so 77 go up (24.9 %).
    assert "strong share on this data: 24.9% (target 25.0%)" in result.output


def _ledger_with_feedback(url: str, rated: list[tuple[float, str, float | None]]) -> None:
    """Requests (score, tier, feedback or None) in a fresh SQLite ledger."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from gateway.ledger.db import make_engine
    from gateway.ledger.models import Base, FeedbackRow
    from tests.support.ledger_rows import request_row

    engine = make_engine(url)
    Base.metadata.create_all(engine)
    ts = datetime.now(UTC) - timedelta(hours=1)
    with Session(engine) as session:
        for n, (score, tier, feedback) in enumerate(rated):
            session.add(request_row(f"r{n}", ts=ts, tier=tier, backend=tier, score=score))
            if feedback is not None:
                session.add(
                    FeedbackRow(
                        id=f"f{n}", request_id=f"r{n}", ts=ts, key_id="k", score=feedback,
                        comment=None,
                    )
                )  # fmt: skip
        session.commit()
    engine.dispose()


def test_quality_target_from_the_ledger_needs_feedback(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, policy = files
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _ledger_with_feedback(url, [(0.1, "weak", 1.0), (0.2, "weak", None), (0.9, "strong", 0.0)])
    monkeypatch.setenv("TIERGATE_DATABASE_URL", url)
    result = CliRunner().invoke(
        app, ["calibrate", "--policy", str(policy), "--target-quality", "0.8"]
    )
    assert result.exit_code == 2
    assert "only 1 requests answered below the strongest tier have feedback" in result.output


def test_quality_target_from_ledger_feedback(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """24 weak-tier answers rated 1.0 up to score 0.23, then 0.0; a target mean of 0.9 keeps
    the first k with k/(k') >= 0.9: 20 good ones allow 2 bad (20/22 = 0.909; 20/23 = 0.87)."""
    _, policy = files
    url = f"sqlite:///{tmp_path / 'l.db'}"
    rated: list[tuple[float, str, float | None]] = [
        (round(0.01 * (n + 1), 2), "weak", 1.0 if n < 20 else 0.0) for n in range(24)
    ]
    rated += [(0.9, "strong", 1.0), (0.95, "strong", None)]  # the strong tier's own: not used
    _ledger_with_feedback(url, rated)
    monkeypatch.setenv("TIERGATE_DATABASE_URL", url)
    result = CliRunner().invoke(
        app, ["calibrate", "--policy", str(policy), "--target-quality", "0.9", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    # Kept: scores 0.01..0.22 (20 good, 2 bad); the cut is halfway to 0.23.
    assert "tiers[0] weak: max_score 0.5 → 0.225" in result.output
    assert "the 22 at or below the new threshold average 0.909" in result.output
    # 26 scored requests; above 0.225: 0.23, 0.24, 0.9, 0.95.
    assert "strong share on this data: 15.4%" in result.output


def test_a_scorer_trained_on_the_labels_is_flagged_in_sample(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """train-scorer records its sources; eval-router warns when judging a model on them."""
    labels, policy = files
    artifact = tmp_path / "mine.json"
    trained = CliRunner().invoke(app, ["train-scorer", str(labels), "--out", str(artifact)])
    assert trained.exit_code == 0, trained.output
    policy.write_text(POLICY.replace("{kind: learned}", "{kind: learned, artifact: mine.json}"))
    result = CliRunner().invoke(app, ["eval-router", str(labels), "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "learned (policy artifact)" in result.output
    assert "in-sample and optimistic" in result.output


def test_tier_shares_calibrate_a_three_tier_policy_from_the_ledger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """20 ledger scores 0.025 … 0.975: tiny 50 %, local 25 %, strong the rest."""
    policy = tmp_path / "three.yaml"
    policy.write_text(
        "version: 1\n"
        "backends:\n  a: {type: fake}\n  b: {type: fake}\n  c: {type: fake}\n"
        "tiers:\n"
        "  - {name: tiny, backends: [a], max_score: 0.2}\n"
        "  - {name: local, backends: [b], max_score: 0.6}  # keep me\n"
        "  - {name: strong, backends: [c]}\n"
    )
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _ledger_with_feedback(url, [(0.025 + 0.05 * n, "tiny", None) for n in range(20)])
    monkeypatch.setenv("TIERGATE_DATABASE_URL", url)
    result = CliRunner().invoke(
        app, ["calibrate", "--policy", str(policy), "--tier-shares", "tiny=0.5,local=0.25"]
    )
    assert result.exit_code == 0, result.output
    assert "tiers[0] tiny: max_score 0.2 → 0.5  (50.0% of the requests; target 50.0%)" in (
        result.output
    )
    assert "tiers[1] local: max_score 0.6 → 0.75  (25.0% of the requests; target 25.0%)" in (
        result.output
    )
    assert "tiers[2] strong: the rest (25.0%)" in result.output
    text = policy.read_text()
    assert "max_score: 0.5}" in text
    assert "max_score: 0.75}  # keep me" in text


def test_each_tier_from_its_own_feedback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--target-quality --each-tier on a three-tier policy: tiny's and local's thresholds each
    come from the feedback on that tier's answers (the strongest tier's are not used); without
    --target-quality the flag is refused."""
    policy = tmp_path / "three.yaml"
    policy.write_text(
        "version: 1\n"
        "backends:\n  a: {type: fake}\n  b: {type: fake}\n  c: {type: fake}\n"
        "tiers:\n"
        "  - {name: tiny, backends: [a], max_score: 0.3}\n"
        "  - {name: local, backends: [b], max_score: 0.7}\n"
        "  - {name: strong, backends: [c]}\n"
    )
    rated: list[tuple[float, str, float | None]] = [(0.01 * n, "tiny", 1.0) for n in range(1, 21)]
    rated += [(0.25, "tiny", 0.0), (0.28, "tiny", 0.0), (0.29, "tiny", 0.0)]
    rated += [(0.3 + 0.0125 * n, "local", 1.0) for n in range(1, 21)]
    rated += [(0.6, "local", 0.0), (0.62, "local", 0.0), (0.64, "local", 0.0)]
    rated += [(0.9, "strong", 0.0)] * 5
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _ledger_with_feedback(url, rated)
    monkeypatch.setenv("TIERGATE_DATABASE_URL", url)
    result = CliRunner().invoke(
        app, ["calibrate", "--policy", str(policy), "--target-quality", "0.9", "--each-tier"]
    )
    assert result.exit_code == 0, result.output
    assert "tiers[0] tiny: max_score 0.3 → 0.285  (23 rated answers; the 22 kept average 0.909" in (
        result.output
    )
    assert "tiers[1] local: max_score 0.7 → 0.63  (23 rated answers" in result.output
    text = policy.read_text()
    assert "max_score: 0.285}" in text
    assert "max_score: 0.63}" in text

    refused = CliRunner().invoke(
        app, ["calibrate", "--policy", str(policy), "--target-strong-share", "0.2", "--each-tier"]
    )
    assert refused.exit_code == 2
    assert "--each-tier goes with --target-quality" in refused.output

"""int8 against the original: the drift measures, and ``tiergate bench --artifact`` end to end
on the session's tiny artifact."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gateway.tools.quant_bench import int8_ratios
from gateway.tools.quant_drift import compare, measure


def log_probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_identical_distributions_agree_fully_with_zero_kl() -> None:
    same = log_probs([0.7, 0.2, 0.1], [0.1, 0.1, 0.8])
    assert compare([same], [same.clone()]) == (2, 1.0, 0.0, 0.0)


def test_kl_and_agreement_match_the_hand_computed_values() -> None:
    """KL(p || q) = Σ p log(p / q) per position, then the mean; argmax agreement per position."""
    reference = [log_probs([0.6, 0.4]), log_probs([0.9, 0.1])]
    candidate = [log_probs([0.3, 0.7]), log_probs([0.9, 0.1])]

    positions, agreement, mean_kl, max_kl = compare(reference, candidate)

    first = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7)
    assert positions == 2
    assert agreement == 0.5
    assert max_kl == pytest.approx(first)
    assert mean_kl == pytest.approx(first / 2)


def test_drift_of_the_int8_copy_is_measured_on_the_answer_positions(artifact_dir: Path) -> None:
    """Every answer token's prediction (and the one after the last) is scored; int8 stores the
    weights in fewer bytes."""
    drift = measure(artifact_dir, ["Hello!", "Tell me a story."], max_tokens=4)

    assert drift.prompts == 2
    assert drift.positions == 2 * (4 + 1)
    assert 0.0 <= drift.agreement <= 1.0
    assert 0.0 <= drift.mean_kl <= drift.max_kl
    assert drift.int8_weights_mb < drift.original_weights_mb


def test_ratios_pair_each_int8_row_with_its_original() -> None:
    rows = [
        {"backend": "m", "tokens_per_second": 50.0, "ttft_ms_p50": 20.0, "model_rss_mb": 100.0},
        {"backend": "m:int8", "tokens_per_second": 75.0, "ttft_ms_p50": 10.0, "model_rss_mb": 40.0},
    ]
    assert int8_ratios(rows) == {
        "m:int8 / m tokens/s": 1.5,
        "m:int8 / m TTFT p50": 0.5,
        "m:int8 / m model peak RSS": 0.4,
    }


def test_bench_runs_an_artifact_as_is_and_int8_side_by_side(
    artifact_dir: Path, tmp_path: Path
) -> None:
    """One round, two prompts: both variants answer every prompt, in their own processes, and
    the report carries their speed, memory, the ratios and the drift."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello!\nTell me a story.\n")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.cli.main import main; main()",
            "bench",
            "--artifact",
            str(artifact_dir),
            "--artifact-threads",
            "1",
            "--prompts",
            str(prompts),
            "--rounds",
            "1",
            "--max-tokens",
            "4",
            "--drift-tokens",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    rows = {row["backend"]: row for row in report["results"]}
    name = artifact_dir.name
    assert set(rows) == {name, f"{name}:int8"}
    for row in rows.values():
        assert row["errors"] == []
        assert row["requests"] == 2
        assert row["completion_tokens"] == 8
        assert row["ttft_ms_p50"] > 0
        assert row["peak_rss_mb"] > row["model_rss_mb"] >= 0
    assert f"{name}:int8 / {name} tokens/s" in report["ratios"]
    drift = report["drift"][name]
    assert drift["positions"] == 2 * (4 + 1)
    assert 0.0 <= drift["agreement"] <= 1.0

"""The v2 trainer's design: one regression per source, combined by their coordinate-wise
median (a direction only one source shows does not steer the model), and the crowd (many
models' mean quality) read from label files and from the shared sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapters.base import Message
from gateway.scoring.v2 import INPUTS
from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import Labelled, LabelsError, read_labels
from gateway.tools.scorer.train_v2 import V2Config, fit_v2, ridge

ROOT = Path(__file__).resolve().parents[3]


def planted(quirk_in: str) -> tuple[list[Labelled], np.ndarray]:
    """Three sources of 60 prompts. Input 0 makes the weak model fall short in every source;
    input 1 does so only in ``quirk_in`` (three times as strongly), and is noise elsewhere."""
    rng = np.random.default_rng(7)
    items: list[Labelled] = []
    rows = []
    for source in ("a", "b", "c"):
        for n in range(60):
            shared, quirk = rng.normal(), rng.normal()
            shortfall = shared + (3.0 * quirk if source == quirk_in else 0.0)
            row = np.zeros(len(INPUTS))
            row[0], row[1] = shared, quirk
            rows.append(row)
            items.append(
                Labelled(
                    id=f"{source}-{n}",
                    group=source,
                    messages=(Message(role="user", content=f"{source} {n}"),),
                    weak=-shortfall,
                    strong=0.0,
                )
            )
    return items, np.array(rows)


def test_a_direction_one_source_shows_is_dropped_and_a_shared_one_kept() -> None:
    items, x = planted("a")
    coef = np.array(fit_v2(items, x)["coef"])
    assert coef[0] > 0.3
    assert abs(coef[1]) < 0.2 * coef[0]
    # One regression over every row (the design before) would follow the quirk:
    pooled = ridge(x - x.mean(axis=0), -np.array([i.weak for i in items]), np.ones(len(x)), 0.3)
    assert pooled[1] > 0.5 * pooled[0]


def test_a_direction_most_sources_show_is_kept() -> None:
    items, x = planted("a")
    # Now b and c show the quirk too: the median follows the majority.
    items = [
        i if i.group == "a" else Labelled(i.id, i.group, i.messages, i.weak - 3.0 * x[k, 1], 0.0)
        for k, i in enumerate(items)
    ]
    coef = np.array(fit_v2(items, x)["coef"])
    assert coef[1] > coef[0] > 0


def test_every_target_trains_and_is_recorded() -> None:
    items, x = planted("b")
    for target in ("blend", "weak_shortfall", "hardness", "gain"):
        artifact = fit_v2(items, x, V2Config(target=target))
        assert artifact["training"]["config"]["target"] == target
        assert artifact["training"]["per_source"] == {"a": 60, "b": 60, "c": 60}


def test_label_files_carry_a_crowd_and_refuse_a_wrong_one(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    rows = [
        {"id": "1", "prompt": "hi", "weak": 1, "strong": 1, "crowd": 0.25},
        {"id": "2", "prompt": "hey", "weak": 0, "strong": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = read_labels([path]).items
    assert (first.crowd, first.hardness) == (0.25, -0.25)
    assert (second.crowd, second.hardness) == (None, -0.5)  # the pair's mean stands in
    path.write_text(json.dumps({**rows[0], "crowd": "high"}) + "\n")
    with pytest.raises(LabelsError, match='"crowd" must be a number'):
        read_labels([path])
    out = tmp_path / "out.jsonl"
    sources.write_jsonl([first, second], out)
    assert [i.crowd for i in read_labels([out]).items] == [0.25, None]


def test_shared_sources_carry_their_crowds() -> None:
    pairs = sources.routellm(ROOT).items
    mt = [i for i in pairs if i.group == "mt_bench"]
    assert mt
    assert all(i.crowd is not None and 1.0 <= i.crowd <= 10.0 for i in mt)
    assert all(i.crowd is None for i in pairs if i.group in ("gsm8k", "mmlu"))
    bench = sources.routerbench(ROOT)
    assert bench
    assert all(i.crowd is not None and 0.0 <= i.crowd <= 1.0 for i in bench)
    # The crowd is not the pair: somewhere the other models disagree with the pair's mean.
    assert any(i.crowd != (i.weak + i.strong) / 2 for i in bench)
    alpaca = sources.alpaca_eval(ROOT)
    by_prompt: dict[str, set[float | None]] = {}
    for i in alpaca:
        by_prompt.setdefault(i.messages[-1].content, set()).add(i.crowd)
    assert len(by_prompt) == 805
    assert all(len(crowds) == 1 for crowds in by_prompt.values())  # one crowd per prompt

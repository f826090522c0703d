"""``tiergate eval-router --loso`` and ``tiergate train-scorer --kind v2``: the v2 scorer's
leave-one-source-out evaluation and its training, wired to files and the terminal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer

from gateway.cli.scorer import label_files, read_label_files, source_of
from gateway.policy import Policy
from gateway.scoring.features import last_user_text
from gateway.scoring.heuristic import ScorerWeights
from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import LabelsError, LabelSet


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _exclusions(path: Path | None, shared: bool) -> frozenset[str]:
    """Ids never to train on: the TSV named, else (shared data only) overlap_drop.tsv."""
    try:
        if path is None:
            return sources.training_exclusions() if shared else frozenset()
        with path.open(encoding="utf-8", newline="") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t"))
    except (OSError, LabelsError) as exc:
        raise _fail(str(exc)) from None
    if rows and "id" not in rows[0]:
        raise _fail(f"{path}: needs a tab-separated header with an 'id' column")
    return frozenset(row["id"] for row in rows)


def run_loso(
    labels_files: list[Path] | None,
    *,
    policy: Policy | None,
    with_learned: bool,
    resamples: int,
    seed: int,
    drop_from_training: Path | None,
    keep_contaminated: bool,
    out_json: Path | None,
    out_md: Path | None,
) -> None:
    from gateway.tools.scorer import loso
    from gateway.tools.scorer.evaluate import v1_scores
    from gateway.tools.scorer.loso_report import to_json, to_markdown
    from gateway.tools.scorer.train_v2 import V2Config, design

    shared = not labels_files
    if shared:
        try:
            labels: LabelSet = sources.every_source()
        except LabelsError as exc:
            raise _fail(str(exc)) from None
        names = [p.name for p in sources.shipped_training_files()] + [sources.ALPACA_EVAL.name]
    else:
        files = label_files(labels_files)
        labels = read_label_files(files, keep_contaminated)
        names = [p.name for p in files]
    items = labels.items
    exclude = _exclusions(drop_from_training, shared)
    _echo(f"{len(items)} prompts, sources: {', '.join(labels.sources())}; computing inputs")
    config = V2Config()
    x = design(items)
    try:
        v2, folds = loso.v2_scores(items, x, exclude, config, progress=_echo)
        routers = {"v2 (LOSO)": v2}
        if with_learned:
            routers["learned (LOSO)"] = loso.learned_scores(items, exclude, progress=_echo)
        routers["v1 scorer"] = v1_scores(items, policy.scorer if policy else ScorerWeights())
        routers["prompt length"] = [float(len(last_user_text(i.messages))) for i in items]
        _echo(f"bootstrap: {resamples} resamples per group")
        groups = loso.figures(items, routers, resamples=resamples, seed=seed)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    summary = loso.summary(groups, "v2 (LOSO)", ["v1 scorer", "prompt length"])
    meta = {
        "mode": "leave-one-source-out",
        "labels": names,
        "prompts": len(items),
        "contaminated_left_out": labels.contaminated,
        "excluded_from_training": sum(1 for i in items if i.id in exclude),
        "resamples": resamples,
        "seed": seed,
        "v2_config": {"alpha": config.alpha, "target": config.target},
    }
    report = to_json(groups, folds, summary, meta)
    markdown = to_markdown(report)
    typer.echo(markdown)
    for path, text in ((out_json, json.dumps(report, indent=2) + "\n"), (out_md, markdown)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def train_v2(labels_files: list[Path] | None, *, out: Path | None, keep_contaminated: bool) -> None:
    from gateway.scoring.v2 import DEFAULT_V2_ARTIFACT
    from gateway.tools.scorer.train import dumps
    from gateway.tools.scorer.train_v2 import V2Config, design, fit_v2

    if labels_files:
        files = label_files(labels_files)
        items = list(read_label_files(files, keep_contaminated).items)
    else:
        try:
            files = sources.shipped_training_files()
            items = sources.shipped_training_set()
        except LabelsError as exc:
            raise _fail(str(exc)) from None
    artifact = fit_v2(items, design(items), V2Config(), sources=[source_of(p) for p in files])
    target = out or DEFAULT_V2_ARTIFACT
    target.write_bytes(dumps(artifact))
    typer.echo(f"wrote {target} ({len(items)} prompts, digest {artifact['digest']})")

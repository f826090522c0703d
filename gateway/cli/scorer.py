"""``tiergate eval-router`` and ``tiergate train-scorer``: judging and training the scorer
offline, from labelled prompts (``calibrate`` and ``policy replay`` are in ``calibrate``)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.policy import settings_or_exit
from gateway.policy import Policy, PolicyError, load_policy
from gateway.tools.scorer.labels import (
    ROUTELLM_PAIRS,
    LabelsError,
    LabelSet,
    read_labels,
    shared_data,
)

LabelsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Labelled prompts: JSON lines (.jsonl or .jsonl.gz), see README. Default: the "
        "RouteLLM pairs in the shared data folder, ../shared/research/data/routellm/."
    ),
]
PolicyOpt = Annotated[Path | None, typer.Option(help="Policy (default: TIERGATE_POLICY).")]
KeepOpt = Annotated[
    bool,
    typer.Option(help="Keep prompts marked contaminated (RouteLLM leaves them out; so do we)."),
]


def policy_at(path: Path | None) -> Policy:
    try:
        return load_policy(path or settings_or_exit().policy)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


def label_files(paths: list[Path] | None) -> list[Path]:
    """The files named, each checked; none named: the shared RouteLLM pairs."""
    try:
        if not paths:
            return [shared_data(ROUTELLM_PAIRS)]
    except LabelsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    for path in paths:
        if not path.is_file():
            typer.echo(
                f"error: {path}: no such file. The public labelled data (RouteLLM, "
                f"RouterBench, AlpacaEval) lives outside the project, in "
                f"../shared/research/data/ beside the checkout.",
                err=True,
            )
            raise typer.Exit(code=2)
    return paths


def read_label_files(paths: list[Path], keep: bool) -> LabelSet:
    try:
        labels = read_labels(paths, keep_contaminated=keep)
    except LabelsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if labels.contaminated:
        typer.echo(f"left out {labels.contaminated} prompts marked contaminated", err=True)
    return labels


def eval_router(
    labels_files: LabelsArg = None,
    policy: PolicyOpt = None,
    kfold: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Train the learned scorer per fold on the other folds and score the held-out "
            "fold (cross-validated figures); default: the policy's scorer as it is.",
        ),
    ] = None,
    out_json: Annotated[Path | None, typer.Option(help="Write the results as JSON.")] = None,
    out_md: Annotated[Path | None, typer.Option(help="Write the results as markdown.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save the PGR curves as a PNG.")] = None,
    keep_contaminated: KeepOpt = False,
) -> None:
    """APGR, CPT(50%) and CPT(80%) of the policy's scorer per benchmark, with baselines."""
    from gateway.tools.scorer.evaluate import (
        evaluate,
        kfold_scores,
        to_json,
        to_markdown,
        v1_scores,
    )

    loaded = policy_at(policy)
    labels_files = label_files(labels_files)
    labels = read_label_files(labels_files, keep_contaminated)
    items = labels.items
    routers: dict[str, list[float]] = {}
    meta: dict[str, Any] = {
        "labels": [p.name for p in labels_files],
        "prompts": len(items),
        "contaminated_left_out": labels.contaminated,
        "policy_scorer": loaded.scorer_kind,
    }
    if kfold is not None:
        config = _train_config(loaded)
        meta.update({"kfold": kfold, "train_config": asdict(config)})
        routers[f"learned ({kfold}-fold CV)"] = kfold_scores(
            items, kfold, config, progress=lambda m: typer.echo(m, err=True)
        )
    elif loaded.learned is not None:
        learned = loaded.learned
        trained_on = [p.name for p in labels_files if source_of(p) in learned.training_sources]
        if trained_on:
            meta["warning"] = (
                f"the policy's learned scorer was trained on {', '.join(trained_on)}: these "
                f"figures are in-sample and optimistic; use --kfold for honest ones"
            )
            typer.echo(f"warning: {meta['warning']}", err=True)
        routers["learned (policy artifact)"] = [
            learned.score(i.messages, i.max_tokens).value for i in items
        ]
    routers["v1 scorer"] = v1_scores(items, loaded.scorer)
    try:
        results = evaluate(labels, routers)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    report = to_json(results, meta)
    markdown = to_markdown(report)
    typer.echo(markdown)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=2) + "\n")
    if out_md is not None:
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_md.write_text(markdown + "\n")
    if plot is not None:
        from gateway.tools.scorer.plot import save_plot

        save_plot(results, plot)
        typer.echo(f"plot saved to {plot}", err=True)


def _train_config(policy: Policy) -> Any:
    from gateway.tools.scorer.train import TrainConfig

    if policy.learned is None:
        return TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in policy.learned.training_config.items() if k in known})


def train_scorer(
    labels_files: LabelsArg = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the artifact (default: the one shipped in gateway/)."),
    ] = None,
    keep_contaminated: KeepOpt = False,
) -> None:
    """Train the learned scorer on labelled prompts; the same files give the same bytes."""
    from gateway.scoring.learned import DEFAULT_ARTIFACT
    from gateway.tools.scorer.train import TrainConfig, dumps, featurize, fit

    labels_files = label_files(labels_files)
    labels = read_label_files(labels_files, keep_contaminated)
    config = TrainConfig()
    feats = featurize(labels.items, config.buckets)
    artifact = fit(labels.items, feats, config, sources=[source_of(p) for p in labels_files])
    target = out or DEFAULT_ARTIFACT
    target.write_bytes(dumps(artifact))
    typer.echo(f"wrote {target} ({len(labels.items)} prompts, digest {artifact['digest']})")


def source_of(path: Path) -> str:
    import hashlib

    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"

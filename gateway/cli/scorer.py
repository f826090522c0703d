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
    loso: Annotated[
        bool,
        typer.Option(
            "--loso",
            help="Leave one source out: train v2 on every other source, score the held-out "
            "one; APGR with a bootstrap 95% interval per group. With no files: the seven "
            "public sources of the shared data folder (RouteLLM, RouterBench, AlpacaEval).",
        ),
    ] = False,
    with_learned: Annotated[
        bool, typer.Option(help="--loso: also retrain the learned scorer per held-out source.")
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Prequential: stream the rows in file order, score each with the adaptive "
            "layer (over the policy's base scorer) from the earlier rows' labels only, then "
            "reveal its label; APGR overall and per quarter, and the static base scorer's.",
        ),
    ] = False,
    resamples: Annotated[int, typer.Option(min=10, help="--loso: bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="--loso: the bootstrap's seed.")] = 0,
    drop_from_training: Annotated[
        Path | None,
        typer.Option(
            help="--loso: a TSV with an 'id' column of prompts never to train on (default with "
            "no files named: the shared routellm/overlap_drop.tsv; else none)."
        ),
    ] = None,
    out_json: Annotated[Path | None, typer.Option(help="Write the results as JSON.")] = None,
    out_md: Annotated[Path | None, typer.Option(help="Write the results as markdown.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save the PGR curves as a PNG.")] = None,
    keep_contaminated: KeepOpt = False,
) -> None:
    """APGR, CPT(50%) and CPT(80%) of the policy's scorer per benchmark, with baselines."""
    if online:
        from gateway.tools.scorer.prequential import prequential, to_markdown

        files = label_files(labels_files)
        items = read_label_files(files, keep_contaminated).items
        report = {"labels": [p.name for p in files], **prequential(items, policy_at(policy))}
        typer.echo(to_markdown(report))
        if out_json is not None:
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(report, indent=2) + "\n")
        return
    if loso:
        from gateway.cli.loso import run_loso

        run_loso(
            labels_files,
            policy=policy_at(policy) if policy is not None else None,
            with_learned=with_learned,
            resamples=resamples,
            seed=seed,
            drop_from_training=drop_from_training,
            keep_contaminated=keep_contaminated,
            out_json=out_json,
            out_md=out_md,
        )
        return
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
    elif loaded.v2 is not None:
        v2 = loaded.v2
        routers["v2 (policy artifact)"] = [v2.score(i.messages, i.max_tokens).value for i in items]
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
    kind: Annotated[
        str,
        typer.Option(
            help="learned, or v2 (with no files named, v2 trains on the shared RouteLLM pairs "
            "minus routellm/overlap_drop.tsv plus the RouterBench slices)."
        ),
    ] = "learned",
    keep_contaminated: KeepOpt = False,
) -> None:
    """Train the learned or the v2 scorer on labelled prompts; the same files give the same
    bytes."""
    if kind not in ("learned", "v2"):
        typer.echo(f"error: --kind {kind!r}: use learned or v2", err=True)
        raise typer.Exit(code=2)
    if kind == "v2":
        from gateway.cli.loso import train_v2

        train_v2(labels_files, out=out, keep_contaminated=keep_contaminated)
        return
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

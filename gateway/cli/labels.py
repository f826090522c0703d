"""``tiergate export-labels``: the public labelled sets of the shared data folder written as
one labels file (``{"id", "messages", "weak", "strong", "source", "benchmark"}`` per line), so
``eval-router`` (``--online`` included) and other tools can read them like your own."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer

from gateway.tools.scorer import sources
from gateway.tools.scorer.labels import Labelled, LabelsError

CHOICES = (
    "routellm",
    "routellm_trainable",
    "routerbench",
    "alpaca_mixtral",
    "alpaca_mistral",
    "all",
)


def _rows(name: str) -> list[Labelled]:
    if name == "routellm":
        return list(sources.routellm().items)
    if name == "routellm_trainable":  # what may be trained on: overlap_drop.tsv's rows left out
        dropped = sources.training_exclusions()
        return [i for i in sources.routellm().items if i.id not in dropped]
    if name == "routerbench":
        return sources.routerbench()
    if name.startswith("alpaca_"):
        return [i for i in sources.alpaca_eval() if i.group == name]
    return list(sources.every_source().items)


def export_labels(
    source: Annotated[str, typer.Argument(help=f"One of {', '.join(CHOICES)}.")],
    out: Annotated[Path, typer.Option(help="The labels file (JSON lines) to write.")],
    shuffle_seed: Annotated[
        int | None,
        typer.Option(
            help="Shuffle the rows with random.Random(SEED): the shared files are grouped by "
            "source, and a prequential run (eval-router --online) wants them mixed."
        ),
    ] = None,
) -> None:
    """Write a public labelled set from ../shared/research/data/ as a labels file."""
    if source not in CHOICES:
        typer.echo(f"error: source: use one of {', '.join(CHOICES)}", err=True)
        raise typer.Exit(code=2)
    try:
        rows = _rows(source)
    except LabelsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    count = sources.write_jsonl(rows, out)
    typer.echo(f"wrote {count} labelled prompts to {out}", err=True)

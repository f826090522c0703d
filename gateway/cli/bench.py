"""The ``tiergate bench`` command (argument handling and the table; the work is in
``gateway.tools.inference_bench``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console
from rich.table import Table

from adapters.config import BackendConfig, TinyConfig, with_paths_resolved
from gateway.tools.inference_bench import (
    DEFAULT_PROMPTS,
    BenchSettings,
    BenchTarget,
    run_bench,
    write_report,
)
from gateway.tools.quant_bench import Device, int8_ratios, run_drift, targets_for

DEFAULT_POLICY = Path("policies/default.yaml")


class _BackendsSection(BaseModel):
    """Only the ``backends:`` part of a policy file; the rest is the gateway's business."""

    model_config = ConfigDict(extra="ignore")
    backends: dict[str, BackendConfig]


def _policy_backends(policy: Path) -> dict[str, BackendConfig]:
    try:
        raw = yaml.safe_load(policy.read_text())
        section = _BackendsSection.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise typer.BadParameter(f"{policy}: {exc}", param_hint="--policy") from exc
    base = policy.resolve().parent
    return {name: with_paths_resolved(cfg, base) for name, cfg in section.backends.items()}


def _read_prompts(path: Path) -> tuple[str, ...]:
    prompts = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not prompts:
        raise typer.BadParameter(f"{path} holds no prompts (one per line)", param_hint="--prompts")
    return prompts


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="tiergate bench")
    columns = (
        ("backend", "backend", 0),
        ("req", "requests", 0),
        ("tok/s", "tokens_per_second", 1),
        ("tok/s/req p50", "tokens_per_second_per_request_p50", 1),
        ("wall p50 ms", "latency_ms_p50", 1),
        ("wall p90 ms", "latency_ms_p90", 1),
        ("server p50 ms", "server_ms_p50", 1),
        ("server p90 ms", "server_ms_p90", 1),
        ("ttft p50 ms", "ttft_ms_p50", 1),
        ("load ms", "load_ms", 0),
        ("peak RSS MB", "peak_rss_mb", 0),
        ("model peak MB", "model_rss_mb", 0),
        ("model end MB", "model_rss_end_mb", 0),
    )
    for header, *_ in columns:
        table.add_column(header, justify="left" if header == "backend" else "right")
    for row in report["results"]:
        table.add_row(*(_fmt(row[key], digits) for _, key, digits in columns))
    return table


def bench(
    artifact: Annotated[
        list[Path] | None,
        typer.Option(
            help="Add a saved transformers artifact (a directory) twice: as-is (float32) and "
            "int8-quantized, with the int8 copy's drift (repeatable; needs tiergate[torch])."
        ),
    ] = None,
    artifact_device: Annotated[
        Device,
        typer.Option(help="Device of the as-is --artifact run (the int8 copy runs on the CPU)."),
    ] = "cpu",
    artifact_threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch threads for --artifact runs (default: torch's choice)."),
    ] = None,
    drift_tokens: Annotated[
        int, typer.Option(min=1, help="Answer tokens per prompt scored for int8 drift.")
    ] = 32,
    gguf: Annotated[
        list[Path] | None,
        typer.Option(help="Add an in-process tiny backend for this GGUF file (repeatable)."),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(help="Add a backend defined in --policy, by name (repeatable)."),
    ] = None,
    policy: Annotated[Path, typer.Option(help="Policy file that defines --backend names.")] = (
        DEFAULT_POLICY
    ),
    direct: Annotated[
        bool, typer.Option(help="Also run llama_cpp.Llama directly on each tiny backend's GGUF.")
    ] = True,
    prompts: Annotated[
        Path | None, typer.Option(help="File with one prompt per line (default: built-in set).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 64,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    seed: int = 1234,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up requests per backend.")] = 1,
    repeat: Annotated[int, typer.Option(min=1, help="Passes over the prompt set.")] = 1,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (A,B,A,B…).")] = 2,
    stream: Annotated[bool, typer.Option(help="Stream from adapters (measures TTFT).")] = True,
    out: Annotated[Path | None, typer.Option(help="JSON result file.")] = None,
) -> None:
    """Benchmark backends side by side: latency, tokens per second, memory."""
    targets: list[BenchTarget] = []
    if backend:
        defined = _policy_backends(policy)
        for name in backend:
            if name not in defined:
                known = ", ".join(sorted(defined)) or "none"
                raise typer.BadParameter(
                    f"no backend {name!r} in {policy} (known: {known})", param_hint="--backend"
                )
            targets.append(BenchTarget(label=name, config=defined[name]))
    for path in gguf or ():
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="--gguf")
        config = TinyConfig(type="tiny", model=str(path.resolve()))
        targets.append(BenchTarget(label=path.stem, config=config))
    for path in artifact or ():
        if not (path / "config.json").is_file():
            raise typer.BadParameter(
                f"{path} is not a saved transformers model (no config.json)",
                param_hint="--artifact",
            )
        targets.extend(
            targets_for(path.resolve(), device=artifact_device, n_threads=artifact_threads)
        )
    if not targets:
        targets.append(BenchTarget(label="tiny", config=TinyConfig(type="tiny")))
    if direct:
        for target in list(targets):
            if isinstance(target.config, TinyConfig):
                targets.append(
                    BenchTarget(label=f"direct:{target.label}", config=target.config, direct=True)
                )
    settings = BenchSettings(
        prompts=_read_prompts(prompts) if prompts else DEFAULT_PROMPTS,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        warmup=warmup,
        repeat=repeat,
        stream=stream,
    )
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        report = run_bench(
            targets, settings, rounds=rounds, progress=lambda msg: status.update(msg)
        )
        if artifact:
            report["ratios"].update(int8_ratios(report["results"]))
            report["drift"] = {}
            for path in artifact:
                status.update(f"int8 drift: {path.name}")
                report["drift"][path.name] = run_drift(
                    path.resolve(), settings.prompts, drift_tokens
                )
    out_console = Console() if Console().is_terminal else Console(width=160)
    out_console.print(_table(report))
    for key, value in report["ratios"].items():
        out_console.print(f"{key}: {value:.3f}")
    for name, drift in report.get("drift", {}).items():
        out_console.print(f"int8 drift of {name}: {drift}")
    failed = [r for r in report["results"] if r["errors"]]
    for row in failed:
        console.print(f"[red]{row['backend']} failed:[/red] {'; '.join(row['errors'])}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out or Path("bench/results") / f"inference-{stamp}.json"
    write_report(report, path)
    console.print(f"results written to {path}")
    if failed:
        raise typer.Exit(code=1)

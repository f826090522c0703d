"""``tiergate fit`` and ``tiergate eval-models``: pre-flight checks before a new local model takes
any traffic (will it fit the memory, and does it answer as well and as fast as the current one)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.policy import settings_or_exit
from gateway.tools.eval_models import (
    CaseFileError,
    read_cases,
    render_json,
    render_table,
    run_backend,
)
from gateway.tools.fit import GIB, FitRequest, ModelShape, estimate, render
from gateway.tools.model_meta import (
    ARTIFACT_KV_TYPE,
    ModelMetaError,
    read_artifact,
    read_gguf,
    shape_from_ollama,
)

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
F16 = "f16"  # llama.cpp's default KV cache type
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8GiB', '512MiB', '8G', '1.5g' → bytes (binary units; a bare number is GiB)."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r}: give a size such as 8GiB, 512MiB or 1.5G")
    number, unit, _ = match.groups()
    scale = _UNITS[unit.lower()] if unit else GIB
    return int(float(number) * scale)


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


async def _ollama_shape(host: str, model: str) -> ModelShape:
    import httpx
    import ollama

    client = ollama.AsyncClient(host=host)
    try:
        show = await client.show(model)
        listed = await client.list()
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ModelMetaError(
                f"ollama at {host} has no model {model!r}: run `ollama pull {model}` there first"
            ) from None
        raise ModelMetaError(f"ollama at {host}: {exc.error}") from None
    except (httpx.HTTPError, ConnectionError) as exc:
        raise ModelMetaError(
            f"ollama at {host} is unreachable ({type(exc).__name__}): start it with "
            "`ollama serve`, or pass --ollama-host"
        ) from None
    body: dict[str, Any] = show.model_dump(by_alias=True)
    body.setdefault("model_info", show.modelinfo or {})
    digest = next((m.digest for m in listed.models if m.model in (model, f"{model}:latest")), None)
    return shape_from_ollama(model, body, f"sha256:{digest}" if digest else None)


def _resolve(
    model: str, policy: Path | None, ollama_host: str
) -> tuple[ModelShape, int | None, str]:
    """A model argument → its shape, the context its tiergate backend is configured with, and
    its default KV cache type (llama.cpp's f16; a transformers artifact's weights' dtype)."""
    from adapters.config import ArtifactConfig, OllamaConfig, TinyConfig
    from adapters.tiny.gguf import default_gguf_path

    if Path(model).is_dir():
        return _artifact(Path(model))
    if model.startswith("ollama:"):
        return asyncio.run(_ollama_shape(ollama_host, model.removeprefix("ollama:"))), None, F16
    if model == "default":
        return read_gguf(default_gguf_path()), int(TinyConfig.model_fields["n_ctx"].default), F16
    path = Path(model)
    if path.suffix == ".gguf" or path.exists():
        return read_gguf(path), None, F16
    from gateway.policy import PolicyError, load_policy

    source = policy or settings_or_exit().policy
    try:
        loaded = load_policy(source)
    except PolicyError as exc:
        raise ModelMetaError(str(exc)) from None
    config = loaded.backends.get(model)
    if config is None:
        raise ModelMetaError(
            f"{model!r} is neither a .gguf file, 'default', 'ollama:<tag>' nor a backend of "
            f"{source} (backends: {', '.join(loaded.backends)})"
        )
    if isinstance(config, TinyConfig):
        path = default_gguf_path() if config.model == "default" else Path(config.model)
        return read_gguf(path), config.n_ctx, F16
    if isinstance(config, OllamaConfig):
        return asyncio.run(_ollama_shape(config.base_url, config.model)), None, F16
    if isinstance(config, ArtifactConfig):
        return _artifact(Path(config.path))
    raise ModelMetaError(
        f"backend {model!r} is of type {config.type!r}: only tiny (GGUF), artifact and ollama "
        "models can be sized here"
    )


def _artifact(path: Path) -> tuple[ModelShape, int | None, str]:
    shape = read_artifact(path)
    # Sized at the context the model was built for, unless --context says otherwise.
    return shape, shape.context_train or None, ARTIFACT_KV_TYPE.get(shape.quantization, F16)


def fit(
    model: Annotated[
        str,
        typer.Argument(
            help="A .gguf file, a saved transformers model directory, 'default' (SmolLM2), "
            "'ollama:<tag>', or a backend of the policy."
        ),
    ],
    memory: Annotated[
        str | None,
        typer.Option(help="Memory the model may use, e.g. 8GiB (default: available here now)."),
    ] = None,
    context: Annotated[
        int | None,
        typer.Option(min=1, help="Context per slot (default: the backend's n_ctx, else 4096)."),
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Parallel slots (sequences).")] = 1,
    kv_type: Annotated[
        str | None,
        typer.Option(
            help="KV cache type: f16, q8_0, q4_0, f32, bf16 (default: f16; an artifact's: its "
            "weights' dtype)."
        ),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy naming the backend.")] = None,
    ollama_host: Annotated[str, typer.Option(help="Ollama for 'ollama:<tag>'.")] = (
        "http://127.0.0.1:11434"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Will a model fit? Weights, KV cache and buffers, each with the numbers behind it.
    Exits 0 when it fits, 1 when it does not, 2 on an error."""
    try:
        shape, configured, kv_default = _resolve(model, policy, ollama_host)
        request = FitRequest(
            memory_bytes=parse_size(memory) if memory else _available_memory(),
            context=context or configured or 4096,
            parallel=parallel,
            kv_type=kv_type or kv_default,
        )
        report = estimate(shape, request)
    except (ModelMetaError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": asdict(shape),
                    "request": asdict(request),
                    "bytes": {
                        "weights": report.weights,
                        "kv_cache": report.kv_cache,
                        "compute_logits": report.logits,
                        "compute_attention": report.attention,
                        "total": report.total,
                    },
                    "fits": report.fits,
                    "max_context": report.max_context(),
                },
                indent=2,
            )
        )
    else:
        if memory is None:
            typer.echo("memory: what is available on this machine now (use --memory to set it)")
        typer.echo(render(report))
    if not report.fits:
        raise typer.Exit(code=1)


def eval_models(
    cases: Annotated[Path, typer.Option(help="JSON-lines case file (see README).")],
    backends: Annotated[str, typer.Option(help="Comma-separated backend names of the policy.")],
    policy: Annotated[Path | None, typer.Option(help="Policy (default TIERGATE_POLICY).")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Run a case file through each backend and print quality, latency and tokens/s side by
    side. Greedy decoding; the backends run one after another."""
    from adapters import load_backend
    from gateway.policy import PolicyError, load_policy

    if output not in ("table", "json"):
        typer.echo("error: --format: use table or json", err=True)
        raise typer.Exit(code=2)
    try:
        loaded = load_policy(policy or settings_or_exit().policy)
        parsed = read_cases(cases)
    except (PolicyError, CaseFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    names = [n.strip() for n in backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in loaded.backends]
    if not names or unknown:
        typer.echo(
            f"error: --backends: unknown {', '.join(unknown) or '(none given)'}; the policy has "
            f"{', '.join(loaded.backends)}",
            err=True,
        )
        raise typer.Exit(code=2)

    async def run_all() -> list[Any]:
        summaries = []
        for name in names:
            backend = load_backend(name, loaded.backends[name])
            try:
                summaries.append(await run_backend(backend, parsed))
            finally:
                await backend.aclose()
        return summaries

    summaries = asyncio.run(run_all())
    typer.echo(render_table(summaries) if output == "table" else render_json(summaries))

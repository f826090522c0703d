"""``tiergate bench``: the inference benchmark.

Each backend runs in its own child process, so "peak memory" is that backend's process alone
and one model's warm caches cannot flatter another. Backends are run in rounds (A, B, A, B…)
so slow drift on a shared machine spreads over all of them. Every backend gets the same prompts,
the same sampling settings and the same warm-up.

The ``direct`` runner is the baseline: ``llama_cpp.Llama.create_chat_completion`` called with
the same model file and settings, no adapter in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from adapters import load_backend
from adapters.base import ChatRequest, Completion
from adapters.config import ArtifactConfig, BackendConfig, TinyConfig

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about a lighthouse keeper.",
    "What are three tips for staying focused while studying?",
    "Describe how a bicycle works to a ten-year-old.",
    "List five fruits that are rich in vitamin C and say why they are healthy.",
    "Summarise the water cycle in simple terms.",
    "Give me a recipe idea for a quick vegetarian dinner.",
    "What is the difference between weather and climate?",
)


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """What every backend is asked to do; identical across backends in one run."""

    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    seed: int = 1234
    warmup: int = 1
    repeat: int = 1
    stream: bool = True


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """One column of the comparison: an adapter, or the direct llama.cpp baseline."""

    label: str
    config: BackendConfig
    direct: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    latency_ms: float
    server_ms: float | None
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    text: str


@dataclass(slots=True)
class Outcome:
    """What one child process measured (one round of one target)."""

    label: str
    load_ms: float | None = None
    peak_rss_mb: float = 0.0
    # Peak RSS before the model loaded (after importing torch for an artifact), so that
    # peak_rss_mb - base_rss_mb is what the model itself took.
    base_rss_mb: float | None = None
    # RSS when the run ended (the model loaded and warm): what it keeps, where the peak also
    # counts what loading needed for a moment (an int8 model is quantized from float32).
    end_rss_mb: float | None = None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None


def _request(prompt: str, settings: BenchSettings) -> ChatRequest:
    return ChatRequest.from_prompt(
        prompt,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        seed=settings.seed,
    )


def _peak_rss_mb() -> float:
    # ru_maxrss is in kibibytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / (1024.0 * 1024.0)


async def _run_adapter(target: BenchTarget, settings: BenchSettings, out: Outcome) -> None:
    backend = load_backend(target.label, target.config)
    try:
        start = time.perf_counter()
        await backend.prewarm()
        out.load_ms = (time.perf_counter() - start) * 1000.0
        for prompt in settings.prompts[: settings.warmup]:
            await backend.acomplete(_request(prompt, settings))
        for _ in range(settings.repeat):
            for prompt in settings.prompts:
                request = _request(prompt, settings)
                if settings.stream:
                    completion = await _streamed(backend.name, backend.astream(request))
                else:
                    completion = await backend.acomplete(request)
                t = completion.timings
                out.samples.append(
                    Sample(
                        latency_ms=t.latency_ms,
                        server_ms=t.server_ms,
                        ttft_ms=t.ttft_ms,
                        prompt_tokens=completion.usage.prompt_tokens,
                        completion_tokens=completion.usage.completion_tokens,
                        text=completion.text,
                    )
                )
    finally:
        await backend.aclose()


async def _streamed(name: str, chunks: Any) -> Completion:
    from adapters.base import collect

    async with contextlib.aclosing(chunks) as stream:
        return await collect(name, "", stream)


def _run_direct(target: BenchTarget, settings: BenchSettings, out: Outcome) -> None:
    """The baseline: llama_cpp.Llama called directly, same file and settings."""
    from llama_cpp import Llama

    from adapters.tiny.gguf import model_path

    assert isinstance(target.config, TinyConfig)
    config = target.config
    start = time.perf_counter()
    llm = Llama(
        model_path=str(model_path(config.model)),
        n_ctx=config.n_ctx,
        n_batch=config.n_batch,
        n_threads=config.n_threads,
        verbose=False,
    )
    out.load_ms = (time.perf_counter() - start) * 1000.0
    if config.chat_template:
        # The same template the adapter was given, so both format prompts alike.
        from llama_cpp import llama_chat_format

        eos, bos = llm.token_eos(), llm.token_bos()
        llm.chat_handler = llama_chat_format.Jinja2ChatFormatter(
            template=config.chat_template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        ).to_chat_handler()

    def once(prompt: str) -> Sample:
        began = time.perf_counter()
        result: dict[str, Any] = llm.create_chat_completion(  # type: ignore[assignment]
            messages=[{"role": "user", "content": prompt}],
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=0.05,
            seed=settings.seed,
        )
        elapsed = (time.perf_counter() - began) * 1000.0
        usage = result["usage"]
        return Sample(
            latency_ms=elapsed,
            server_ms=elapsed,
            ttft_ms=None,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            text=result["choices"][0]["message"]["content"] or "",
        )

    try:
        for prompt in settings.prompts[: settings.warmup]:
            once(prompt)
        for _ in range(settings.repeat):
            out.samples.extend(once(prompt) for prompt in settings.prompts)
    finally:
        llm.close()


def _child(target: BenchTarget, settings: BenchSettings, conn: Any) -> None:
    from adapters._offline import prepare_offline_env

    prepare_offline_env()
    out = Outcome(label=target.label)
    if isinstance(target.config, ArtifactConfig):
        # Import torch and transformers first: their ~400 MB is the same with or without int8.
        import torch  # noqa: F401
        import transformers  # noqa: F401

        out.base_rss_mb = _peak_rss_mb()
    try:
        if target.direct:
            _run_direct(target, settings, out)
        else:
            asyncio.run(_run_adapter(target, settings, out))
    except Exception as exc:  # report any failure to the parent rather than dying silently
        out.error = f"{type(exc).__name__}: {exc}"
    out.peak_rss_mb = _peak_rss_mb()
    out.end_rss_mb = _current_rss_mb()
    conn.send(out)
    conn.close()


def run_target(target: BenchTarget, settings: BenchSettings) -> Outcome:
    """Run one target in a fresh child process and return what it measured."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(target, settings, child), daemon=True)
    process.start()
    child.close()
    try:
        outcome: Outcome = parent.recv()
    except EOFError:
        outcome = Outcome(label=target.label, error=f"child exited with {process.exitcode}")
    process.join()
    return outcome


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(label: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Merge the rounds of one target into the figures the table and JSON show."""
    samples = [s for o in outcomes for s in o.samples]
    errors = [o.error for o in outcomes if o.error]
    latencies = [s.latency_ms for s in samples]
    servers = [s.server_ms for s in samples if s.server_ms is not None]
    ttfts = [s.ttft_ms for s in samples if s.ttft_ms is not None]
    tokens = sum(s.completion_tokens for s in samples)
    wall_s = sum(latencies) / 1000.0
    per_request = [
        s.completion_tokens / (s.latency_ms / 1000.0) for s in samples if s.latency_ms > 0
    ]
    loads = [o.load_ms for o in outcomes if o.load_ms is not None]
    model_rss = [o.peak_rss_mb - o.base_rss_mb for o in outcomes if o.base_rss_mb is not None]
    model_end = [
        o.end_rss_mb - o.base_rss_mb
        for o in outcomes
        if o.base_rss_mb is not None and o.end_rss_mb is not None
    ]
    return {
        "backend": label,
        "requests": len(samples),
        "errors": errors,
        "completion_tokens": tokens,
        "prompt_tokens": sum(s.prompt_tokens for s in samples),
        "tokens_per_second": tokens / wall_s if wall_s else None,
        "tokens_per_second_per_request_p50": _pct(per_request, 50),
        "latency_ms_p50": _pct(latencies, 50),
        "latency_ms_p90": _pct(latencies, 90),
        "server_ms_p50": _pct(servers, 50),
        "server_ms_p90": _pct(servers, 90),
        "ttft_ms_p50": _pct(ttfts, 50),
        "ttft_ms_p90": _pct(ttfts, 90),
        "load_ms": statistics.median(loads) if loads else None,
        "peak_rss_mb": max((o.peak_rss_mb for o in outcomes), default=None),
        "model_rss_mb": max(model_rss) if model_rss else None,
        "model_rss_end_mb": max(model_end) if model_end else None,
        "texts": [s.text for s in samples[: len(samples) // max(len(outcomes), 1)]],
    }


def run_bench(
    targets: Sequence[BenchTarget],
    settings: BenchSettings,
    *,
    rounds: int = 2,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Run every target ``rounds`` times, interleaved, and return the report as a dict."""
    by_label: dict[str, list[Outcome]] = {t.label: [] for t in targets}
    for round_no in range(1, rounds + 1):
        for target in targets:
            progress(f"round {round_no}/{rounds}: {target.label}")
            by_label[target.label].append(run_target(target, settings))
    results = [summarise(label, outcomes) for label, outcomes in by_label.items()]
    ratios: dict[str, float] = {}
    for target in targets:
        if target.direct:
            continue
        base = f"direct:{target.label}"
        if base in by_label:
            ours = next(r for r in results if r["backend"] == target.label)
            theirs = next(r for r in results if r["backend"] == base)
            if ours["tokens_per_second"] and theirs["tokens_per_second"]:
                ratios[f"{target.label} / {base}"] = (
                    ours["tokens_per_second"] / theirs["tokens_per_second"]
                )
            ratios[f"{target.label} same text as {base}"] = float(ours["texts"] == theirs["texts"])
    return {
        "benchmark": "tiergate bench (inference)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": {**asdict(settings), "rounds": rounds},
        "targets": [
            {"label": t.label, "direct": t.direct, "config": t.config.model_dump()} for t in targets
        ],
        "results": results,
        "ratios": ratios,
    }


def _machine() -> dict[str, Any]:
    import os

    versions = {}
    for package in ("llama-cpp-python", "tiergate", "torch", "transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

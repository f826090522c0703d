"""``tiergate bench --artifact DIR``: one saved transformers artifact as-is against its int8
dynamic-quantized copy, on the same weights.

Speed and memory come from the inference benchmark (``gateway.tools.inference_bench``): each
variant is an ``artifact`` backend in a child process of its own, run in interleaved rounds,
streamed (time to first token), with its peak RSS and the RSS the model added over torch's own.
Drift comes from ``gateway.tools.quant_drift``, in one more child process: next-token argmax
agreement and KL divergence of the int8 copy from the original over the same prompts.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from adapters.config import ArtifactConfig
from gateway.tools.inference_bench import BenchTarget

INT8_SUFFIX = ":int8"
Device = Literal["auto", "cpu", "cuda", "mps"]


def targets_for(
    path: Path, *, device: Device = "cpu", n_threads: int | None = None
) -> list[BenchTarget]:
    """The artifact as-is (float32) and its int8 copy, both on the CPU unless told otherwise."""
    label = path.name
    plain = ArtifactConfig(
        type="artifact", path=str(path), device=device, dtype="float32", n_threads=n_threads
    )
    int8 = plain.model_copy(update={"quantize": "int8", "device": "cpu"})
    return [
        BenchTarget(label=label, config=plain),
        BenchTarget(label=label + INT8_SUFFIX, config=int8),
    ]


def _drift_child(path: str, prompts: Sequence[str], max_tokens: int, conn: Any) -> None:
    from adapters._offline import prepare_offline_env

    prepare_offline_env()
    try:
        from gateway.tools.quant_drift import measure

        conn.send(measure(Path(path), prompts, max_tokens).as_dict())
    except Exception as exc:  # report any failure to the parent rather than dying silently
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    conn.close()


def run_drift(path: Path, prompts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """``quant_drift.measure`` in a fresh child process; its result (or error) as a dict."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_drift_child, args=(str(path), tuple(prompts), max_tokens, child), daemon=True
    )
    process.start()
    child.close()
    try:
        result: dict[str, Any] = parent.recv()
    except EOFError:
        result = {"error": f"child exited with {process.exitcode}"}
    process.join()
    return result


def int8_ratios(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """int8 over original for tokens/s, time to first token and the model's memory."""
    by_label = {row["backend"]: row for row in results}
    ratios: dict[str, float] = {}
    for label, row in by_label.items():
        if not label.endswith(INT8_SUFFIX):
            continue
        base = by_label.get(label.removesuffix(INT8_SUFFIX))
        if base is None:
            continue
        for key, name in (
            ("tokens_per_second", "tokens/s"),
            ("ttft_ms_p50", "TTFT p50"),
            ("model_rss_mb", "model peak RSS"),
            ("model_rss_end_mb", "model RSS at the end"),
        ):
            if row.get(key) and base.get(key):
                ratios[f"{label} / {base['backend']} {name}"] = row[key] / base[key]
    return ratios

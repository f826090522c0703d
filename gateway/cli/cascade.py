"""``tiergate cascade-calibrate``: fit the confidence cascade's calibration for the tiny model
on a verifiable question set, and measure how well it predicts correctness."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import typer


def cascade_calibrate(
    out: Annotated[
        Path, typer.Option(help="Calibration artifact to write (a policy's cascade.calibration).")
    ] = Path("cascade-calibration.json"),
    results: Annotated[Path, typer.Option(help="Measured figures (JSON).")] = Path(
        "bench/results/cascade-tiny.json"
    ),
    model: Annotated[str, typer.Option(help="GGUF path, or 'default' (SmolLM2-135M).")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the arithmetic questions.")] = 7,
    arithmetic: Annotated[int, typer.Option(min=4, help="Arithmetic questions.")] = 200,
    max_tokens: Annotated[int, typer.Option(min=1, max=64)] = 16,
    threads: Annotated[int | None, typer.Option(min=1, help="Generation threads.")] = None,
) -> None:
    """Answer arithmetic and factual questions with the tiny model (greedy), grade them, fit
    an isotonic calibration of its token log-probs, and write the artifact and the AUROC and
    cost/quality curve."""
    from adapters.config import TinyConfig
    from adapters.tiny.backend import TinyBackend
    from gateway.tools.cascade.run import answer_all, logprob_overhead, write

    def progress(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} answered", file=sys.stderr)

    async def main() -> dict[str, object]:
        backend = TinyBackend("tiny", TinyConfig(type="tiny", model=model, n_threads=threads))
        try:
            await backend.prewarm()
            started = time.perf_counter()
            rows = await answer_all(backend, seed, arithmetic, max_tokens, progress)
            elapsed = time.perf_counter() - started
            overhead = await logprob_overhead(backend, seed)
        finally:
            await backend.aclose()
        return write(
            rows,
            model=backend.model_id,
            seed=seed,
            max_tokens=max_tokens,
            out=out,
            results=results,
            overhead=overhead,
            elapsed_s=elapsed,
        )

    summary = asyncio.run(main())
    auroc = summary["auroc_calibrated_out_of_fold"]
    print(f"accuracy {summary['accuracy']} on {summary['questions']} questions")
    print(f"AUROC (out of fold) {auroc}; chosen {summary['chosen']}")
    print(f"wrote {out} and {results}")

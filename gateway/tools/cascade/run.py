"""Answer the verifiable set with a real model through its adapter, grade, fit, write.

The model answers greedily (temperature 0), asked for token log-probs as the cascade asks
for them. Also measured: what asking for log-probs costs the tiny adapter (the same requests
with and without, interleaved).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.base import Backend
from gateway.scoring.confidence import token_logprobs
from gateway.tools.cascade.fit import Graded, report
from gateway.tools.cascade.questions import correct, question_set


async def answer_all(
    backend: Backend,
    seed: int,
    arithmetic: int,
    max_tokens: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[Graded]:
    """Every question of the set, answered and graded, in order."""
    questions = question_set(seed, arithmetic)
    rows: list[Graded] = []
    for i, question in enumerate(questions):
        completion = await backend.acomplete(question.request(max_tokens))
        rows.append(
            Graded(
                kind=question.kind,
                question=question.text,
                answer=completion.text,
                right=correct(question, completion.text),
                logprobs=token_logprobs(completion.logprobs),
            )
        )
        if progress is not None:
            progress(i + 1, len(questions))
    return rows


async def logprob_overhead(backend: Backend, seed: int, rounds: int = 12) -> dict[str, float]:
    """Per generated token, milliseconds with and without log-probs: each prompt is answered
    once untimed (so both timed runs find it in the KV cache), then both ways, in alternating
    order."""
    timed: dict[bool, list[float]] = {True: [], False: []}
    for i, question in enumerate(question_set(seed, rounds)[:rounds]):
        asked = question.request(16)
        await backend.acomplete(asked)
        for logprobs in (True, False) if i % 2 == 0 else (False, True):
            started = time.perf_counter()
            completion = await backend.acomplete(dataclasses.replace(asked, logprobs=logprobs))
            elapsed = (time.perf_counter() - started) * 1000.0
            timed[logprobs].append(elapsed / max(1, completion.usage.completion_tokens))
    return {
        "ms_per_token_with_logprobs_p50": round(statistics.median(timed[True]), 3),
        "ms_per_token_without_p50": round(statistics.median(timed[False]), 3),
    }


def write(
    rows: list[Graded],
    *,
    model: str,
    seed: int,
    max_tokens: int,
    out: Path,
    results: Path,
    overhead: dict[str, float],
    elapsed_s: float,
) -> dict[str, Any]:
    """Fit, then write the calibration artifact and the measured figures; returns them."""
    calibration, figures = report(rows)
    artifact = {
        "version": 1,
        "model": model,
        "weights": dict(calibration.weights),
        "bias": calibration.bias,
        "points": [list(p) for p in calibration.points],
        "fitted_on": {"questions": len(rows), "seed": seed, "max_tokens": max_tokens},
        "auroc_out_of_fold": figures["auroc_calibrated_out_of_fold"][figures["chosen"]],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(artifact, indent=1) + "\n")
    summary = {
        "model": model,
        "seed": seed,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "grading": "arithmetic: first number in the answer equals the result; factual: the "
        "normalised answer contains the gold answer as whole words",
        "curve_assumption": "accuracy_if_escalations_right counts every escalated answer as "
        "right (the next tier as an oracle): an upper bound on what escalation buys",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "run_s": round(elapsed_s, 1),
        "logprob_overhead": overhead,
        **figures,
        "artifact": str(out),
        "answers": [
            dataclasses.asdict(r) | {"logprobs": [round(v, 4) for v in r.logprobs]} for r in rows
        ],
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=1) + "\n")
    return summary

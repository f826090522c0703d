"""The artifact benchmark on a CUDA GPU: float32, bfloat16 and float16 on ``cuda`` (int8 dynamic
quantization is CPU-only in PyTorch), plus float32 and int8 on the host's CPU with one thread for
reference, each variant in its own process as ``tiergate bench --artifact`` runs them, with each
process's peak GPU memory added (``torch.cuda.max_memory_allocated`` / ``_reserved``).

Run on the GPU machine (its own PyTorch; transformers 5.25 and what it needs carried as wheels,
see bench/README.md):  python bench/artifact_cuda.py MODEL_DIR OUT.json [ROUNDS]
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapters.config import ArtifactConfig
from gateway.tools import inference_bench as bench
from gateway.tools.inference_bench import BenchSettings, BenchTarget, Outcome
from gateway.tools.quant_bench import int8_ratios, run_drift

GPU: dict[str, list[dict[str, float] | None]] = {}


class _WithGpuMemory:
    """The child's pipe end: sends the outcome together with the process's peak GPU memory."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, outcome: Outcome) -> None:
        import torch

        gpu = None
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            gpu = {
                "max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "max_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            }
        self.conn.send((outcome, gpu))

    def close(self) -> None:
        self.conn.close()


def _child(target: BenchTarget, settings: BenchSettings, conn: Any) -> None:
    bench._child(target, settings, _WithGpuMemory(conn))


def run_target(target: BenchTarget, settings: BenchSettings) -> Outcome:
    """``inference_bench.run_target``, recording the child's GPU memory too."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, settings, child), daemon=True)
    process.start()
    child.close()
    try:
        outcome, gpu = parent.recv()
    except EOFError:
        outcome, gpu = Outcome(label=target.label, error=f"exited with {process.exitcode}"), None
    process.join()
    GPU.setdefault(target.label, []).append(gpu)
    return outcome  # type: ignore[no-any-return]


def main() -> int:
    path, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    bench.run_target = run_target
    targets = [
        BenchTarget(
            label=f"{path.name}:cuda:{dtype}",
            config=ArtifactConfig(type="artifact", path=str(path), device="cuda", dtype=dtype),
        )
        for dtype in ("float32", "bfloat16", "float16")
    ]
    cpu = ArtifactConfig(
        type="artifact", path=str(path), device="cpu", dtype="float32", n_threads=1
    )
    targets.append(BenchTarget(label=f"{path.name}:cpu1t:float32", config=cpu))
    targets.append(
        BenchTarget(
            label=f"{path.name}:cpu1t:float32:int8",
            config=cpu.model_copy(update={"quantize": "int8"}),
        )
    )
    settings = BenchSettings(max_tokens=64)
    report = bench.run_bench(targets, settings, rounds=rounds, progress=print)
    report["ratios"].update(int8_ratios(report["results"]))
    for row in report["results"]:
        seen = [g for g in GPU.get(row["backend"], []) if g is not None]
        row["gpu_max_allocated_mb"] = max((g["max_allocated_mb"] for g in seen), default=None)
        row["gpu_max_reserved_mb"] = max((g["max_reserved_mb"] for g in seen), default=None)
    import torch
    import transformers

    report["machine"].update(
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        torch_runtime=torch.__version__,
        transformers_runtime=transformers.__version__,
        torch_cuda=torch.version.cuda,
        nvidia_smi=subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
    )
    report["drift"] = {path.name: run_drift(path, settings.prompts, 32)}
    bench.write_report(report, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

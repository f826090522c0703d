"""Build the random-weight Llama artifact that ``tiergate bench --artifact`` compares as-is
against int8 (~30M parameters; its answers are gibberish, its speed, memory and drift real).

Offline: the byte-level BPE tokenizer is trained on this repository's README files, the
weights are random (seed 0). Written with save_pretrained (config.json, model.safetensors,
tokenizer files with a chat template).

Run:  python bench/make_artifact.py [--out bench/models/random-llama-30m]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.tools.random_artifact import ArtifactShape, build_random_artifact

REPO = Path(__file__).resolve().parents[1]
SHAPE = ArtifactShape(
    hidden_size=512,
    layers=8,
    heads=8,
    kv_heads=4,
    intermediate_size=1376,
    context=2048,
    vocab_size=8192,
    seed=0,
)


def corpus() -> list[str]:
    lines: list[str] = []
    for name in ("README.md", "bench/README.md", "policies/README.md"):
        path = REPO / name
        if path.is_file():
            lines.extend(line for line in path.read_text().splitlines() if line.strip())
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/models/random-llama-30m")
    args = parser.parse_args()
    path = build_random_artifact(args.out, SHAPE, corpus())
    print(path)


if __name__ == "__main__":
    main()

"""Build the random-weight Llama artifact that ``tiergate bench --artifact`` compares as-is
against int8 (~30M parameters; its answers are gibberish, its speed, memory and drift real).

Offline and reproducible: the byte-level BPE tokenizer is trained on a synthetic corpus of
pseudo-words drawn with a fixed seed (Zipf-like frequencies, so merges form as in text), the
weights are random (seed 0). Written with save_pretrained (config.json, model.safetensors,
tokenizer files with a chat template).

Run:  python bench/make_artifact.py [--out bench/models/random-llama-30m]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from gateway.tools.random_artifact import ArtifactShape, build_random_artifact

REPO = Path(__file__).resolve().parents[1]
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
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


def corpus(words: int = 6000, sentences: int = 4000, seed: int = 0) -> list[str]:
    """Sentences of pseudo-words; word k is drawn with weight 1/k (Zipf)."""
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choices(LETTERS, weights=range(26, 0, -1), k=rng.randint(2, 9)))
        for _ in range(words)
    ]
    weights = [1.0 / (k + 1) for k in range(words)]
    lines = []
    for _ in range(sentences):
        chosen = rng.choices(vocabulary, weights=weights, k=rng.randint(5, 16))
        lines.append(" ".join(chosen).capitalize() + rng.choice(".?!"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/models/random-llama-30m")
    args = parser.parse_args()
    path = build_random_artifact(args.out, SHAPE, corpus())
    print(path)


if __name__ == "__main__":
    main()

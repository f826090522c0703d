"""Prompt embeddings for the scorers: wordllama's 256-dimension static embedding table (MIT),
shipped inside its wheel and loaded from the package's own folder, so nothing is downloaded at
run time (its default location is elsewhere, and it would try). About 0.05 ms for a short
prompt, 0.4 ms for a 1,000-token one; loaded on first use (~0.5 s with the import)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from wordllama import WordLlama

DIMENSIONS = 256


@cache
def _model() -> WordLlama:
    import wordllama

    return wordllama.WordLlama.load(
        dim=DIMENSIONS, cache_dir=Path(wordllama.__file__).parent, disable_download=True
    )


def embed_many(texts: Sequence[str]) -> NDArray[np.float32]:
    """One unit-length row per text (an empty text embeds as zeros)."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    raw = np.asarray(_model().embed(list(texts), norm=False), dtype=np.float32)
    vectors: NDArray[np.float32] = raw.reshape(len(texts), DIMENSIONS)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def embed(text: str) -> NDArray[np.float32]:
    """``text``'s unit-length embedding."""
    vector: NDArray[np.float32] = embed_many([text])[0]
    return vector

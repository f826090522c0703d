"""Keep third-party libraries from reaching the network at run time.

litellm fetches its price map at import unless told to use the bundled one, and tiktoken
downloads encodings on first use unless pointed at a cache that already holds them. litellm
ships both encodings tiktoken needs (cl100k_base, o200k_base), so we point tiktoken there,
finding the directory without importing litellm (which takes seconds).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def litellm_tokenizers_dir() -> Path | None:
    """litellm's bundled tiktoken cache, or None when litellm is not installed."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return path if path.is_dir() else None


def prepare_offline_env() -> None:
    """Set the environment so litellm and tiktoken use their bundled data. Idempotent; call it
    before the first import of litellm or first use of tiktoken. Explicit settings win."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        tokenizers = litellm_tokenizers_dir()
        if tokenizers is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizers)

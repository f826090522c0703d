"""Shared fixtures. The tiny model is loaded once per session: it is real and takes ~0.3 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from adapters._offline import prepare_offline_env
from adapters.config import TinyConfig
from adapters.tiny.backend import TinyBackend

prepare_offline_env()


@pytest.fixture(scope="session")
def tiny() -> Iterator[TinyBackend]:
    """The real SmolLM2-135M-Instruct GGUF, in-process."""
    backend = TinyBackend("tiny", TinyConfig(type="tiny", n_ctx=2048))
    yield backend
    asyncio.run(backend.aclose())


def pytest_unconfigure(config: pytest.Config) -> None:
    """llama_cpp._utils opens /dev/null twice at import and never closes it, which prints a
    ResourceWarning at interpreter exit; close them so the run's output stays clean."""
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()

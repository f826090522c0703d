"""Shared fixtures. The tiny model is loaded once per session: it is real and takes ~0.3 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adapters._offline import prepare_offline_env
from adapters.config import TinyConfig
from adapters.tiny.backend import TinyBackend

if TYPE_CHECKING:
    from tests.http.live_server import Server

prepare_offline_env()


@pytest.fixture(scope="session")
def tiny() -> Iterator[TinyBackend]:
    """The real SmolLM2-135M-Instruct GGUF, in-process."""
    backend = TinyBackend("tiny", TinyConfig(type="tiny", n_ctx=2048))
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama artifact (~0.1M parameters, a BPE tokenizer trained here, a
    chat template, EOS never the most likely token), saved with save_pretrained; built once."""
    from gateway.tools.random_artifact import build_random_artifact

    return build_random_artifact(tmp_path_factory.mktemp("artifact") / "tiny-llama")


@pytest.fixture(scope="session")
def eos_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shape with EOS the most likely token at every step."""
    from gateway.tools.random_artifact import ArtifactShape, build_random_artifact

    return build_random_artifact(
        tmp_path_factory.mktemp("artifact") / "eos-llama", ArtifactShape(eos_first=True)
    )


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Gateways (``tests.http.live_server.Server``) a test starts: each is stopped at the end,
    whatever the outcome."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    """llama_cpp._utils opens /dev/null twice at import and never closes it, which prints a
    ResourceWarning at interpreter exit; close them so the run's output stays clean."""
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()

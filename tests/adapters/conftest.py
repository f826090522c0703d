"""Fixtures for adapter tests that need a real upstream process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adapters.openai_compat._upstream import LlamaServer


@pytest.fixture(scope="session")
def openai_compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server (llama-cpp-python's, on SmolLM2-135M-Instruct) for the
    whole session; yields its ``/v1`` base URL and terminates it at the end."""
    server = LlamaServer.start(tmp_path_factory.mktemp("openai_compat_server"))
    try:
        yield server.base_url
    finally:
        server.stop()

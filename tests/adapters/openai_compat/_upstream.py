"""A real OpenAI-compatible upstream for tests: llama-cpp-python's server on SmolLM2-135M.

``LlamaServer.start(log_dir)`` runs ``python -m llama_cpp.server`` on a free loopback port and
returns once ``GET /v1/models`` answers (bounded by ``ready_timeout_s``; if the server dies or
never answers, the error carries its log). ``tests/adapters/conftest.py`` runs one per session
as the ``openai_compat_server`` fixture, which yields the server's ``/v1`` base URL.

A test then builds backends against it, one per test (each ``AsyncOpenAI`` client belongs to
the event loop that first used it, and pytest-asyncio gives every test its own loop)::

    async with upstream(openai_compat_server) as backend:
        await backend.acomplete(request)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from adapters.config import OpenAICompatConfig
from adapters.openai_compat.backend import OpenAICompatBackend
from adapters.tiny.gguf import default_gguf_path

MODEL_ALIAS = "smollm2-135m-instruct"
N_CTX = 2048


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    """A running ``llama_cpp.server`` process and where it listens."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    _log: IO[bytes]

    @classmethod
    def start(cls, log_dir: Path, *, ready_timeout_s: float = 120.0) -> LlamaServer:
        """Start the server and wait until it lists its model; raise with its log if not."""
        port = _free_port()
        log_path = log_dir / "llama_server.log"
        log = log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_gguf_path()),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
        ]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        server = cls(process, f"http://127.0.0.1:{port}/v1", log_path, log)
        try:
            server._wait_ready(ready_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        # Poll the readiness endpoint; between polls wait on the process itself, so a server
        # that dies is noticed at once (and no time is spent sleeping for its own sake).
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                try:
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"llama_cpp.server was not ready within {timeout_s} s:\n{self.log()}"
                    )
                try:
                    code = self.process.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"llama_cpp.server exited with code {code}:\n{self.log()}")

    def log(self) -> str:
        """The server's output so far (the last 6000 characters)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """Terminate the server and wait for it (kill it if it does not go)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._log.close()


def backend_for(
    base_url: str,
    *,
    name: str = "openai_compat",
    model: str = MODEL_ALIAS,
    timeout_s: float = 60.0,
) -> OpenAICompatBackend:
    """An ``OpenAICompatBackend`` for the server at ``base_url`` (the ``/v1`` URL)."""
    config = OpenAICompatConfig(
        type="openai_compat", model=model, base_url=base_url, timeout_s=timeout_s
    )
    return OpenAICompatBackend(name, config)


@asynccontextmanager
async def upstream(base_url: str) -> AsyncIterator[OpenAICompatBackend]:
    """A ready backend against the real server at ``base_url``, closed on exit."""
    backend = backend_for(base_url)
    try:
        await backend.prewarm()
        yield backend
    finally:
        await backend.aclose()

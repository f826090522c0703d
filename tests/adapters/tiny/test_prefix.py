"""Prefix reuse in the tiny tier: chained block hashes, the LRU byte budget, and the real
SmolLM2 GGUF reusing a shared system prompt's llama.cpp state across unrelated requests."""

from __future__ import annotations

import asyncio
import ctypes
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest

from adapters.base import ChatRequest, Message
from adapters.config import TinyConfig
from adapters.tiny.backend import TinyBackend
from adapters.tiny.prefix import PrefixCache, Snapshot, block_hashes

BLOCK = 64  # TinyConfig's default prefix_block_tokens
MB = 1024 * 1024

TOPICS = "shipping,refunds,warranty,billing,passwords,delivery,returns,discounts,invoices,accounts"
STYLES = "short sentences,a numbered list,a friendly tone,plain words,one worked example"


def system_prompt(rules: int, company: str) -> str:
    """A support-desk system prompt of ``rules`` numbered rules (~24 tokens each)."""
    topics, styles = TOPICS.split(","), STYLES.split(",")
    lines = [f"You are the support assistant of {company}. Follow these rules."]
    for i in range(rules):
        lines.append(
            f"Rule {i + 1}: when a customer asks about {topics[i % len(topics)]}, answer with "
            f"{styles[i % len(styles)]} and mention policy section {i * 7 % 31}."
        )
    return "\n".join(lines)


def chat(system: str, user: str, max_tokens: int = 24) -> ChatRequest:
    return ChatRequest(
        messages=(Message(role="system", content=system), Message(role="user", content=user)),
        max_tokens=max_tokens,
        temperature=0.0,
    )


UNRELATED = ChatRequest.from_prompt("What is the capital of France?", max_tokens=8, temperature=0.0)


def snapshot(n_tokens: int, nbytes: int) -> Snapshot:
    """A stand-in snapshot of ``n_tokens`` ids whose state buffer has ``nbytes`` bytes."""
    return Snapshot(ids=array("i", range(n_tokens)), data=(ctypes.c_uint8 * nbytes)(), size=nbytes)


def stats(backend: TinyBackend) -> dict[str, Any]:
    result: dict[str, Any] = backend.info.extra["prefix_cache"]
    return result


def system_turn_tokens(backend: TinyBackend, system: str) -> int:
    """Tokens of the ChatML system turn, counted by the loaded model on its worker thread."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n".encode()

    def count() -> int:
        return len(backend._llm.tokenize(text, add_bos=False, special=True))

    return backend._executor.submit(count).result()


def backend(name: str, **config: Any) -> TinyBackend:
    return TinyBackend(name, TinyConfig(type="tiny", n_ctx=1024, **config))


@pytest.fixture(scope="module")
def plain() -> Iterator[TinyBackend]:
    """The reference: the same model with the prefix cache off."""
    reference = backend("tiny-plain", prefix_cache_mb=0)
    yield reference
    asyncio.run(reference.aclose())


class EvalSpy:
    """Records every ``Llama.eval`` call as (tokens already in the context, tokens decoded)."""

    def __init__(self, llm: Any) -> None:
        self.calls: list[tuple[int, int]] = []
        self._llm = llm
        self._eval = llm.eval

    def __call__(self, tokens: Sequence[int]) -> None:
        self.calls.append((int(self._llm.n_tokens), len(tokens)))
        self._eval(tokens)

    def prompt_tokens_decoded(self, prompt_tokens: int) -> int:
        """Prompt tokens decoded since the last call (generated tokens come after them)."""
        decoded = sum(n for start, n in self.calls if start < prompt_tokens)
        self.calls.clear()
        return decoded


async def spied(backend: TinyBackend) -> EvalSpy:
    """Load the model and count what it decodes from now on."""
    await backend.prewarm()
    spy = EvalSpy(backend._llm)
    backend._llm.eval = spy
    return spy


# --- hashing and the byte budget, without the model ----------------------------------------


def test_block_hashes_name_whole_prefixes() -> None:
    """Each hash names the whole prefix up to its block: a longer prompt extends the chain,
    a change in an early block changes every later hash, and a partial block has none."""
    tokens = list(range(1000, 1200))
    hashes = block_hashes(tokens, BLOCK)
    assert len(hashes) == 3  # 200 tokens: three full blocks, 8 tokens left over
    assert block_hashes(tokens[:130], BLOCK) == hashes[:2]
    assert block_hashes([*tokens, 7, 8, 9], BLOCK) == hashes
    changed = [*tokens[:10], 5, *tokens[11:]]
    assert all(a != b for a, b in zip(block_hashes(changed, BLOCK), hashes, strict=True))
    later = [*tokens[:70], 5, *tokens[71:]]
    assert block_hashes(later, BLOCK)[0] == hashes[0]
    assert block_hashes(later, BLOCK)[1:] != hashes[1:]
    assert len(set(hashes)) == 3


def test_cache_evicts_least_recently_used_within_budget() -> None:
    """Entries beyond the byte budget push out the least recently *used* one (a lookup counts
    as use), and the byte count always matches what is stored."""
    cache = PrefixCache(budget_bytes=1000)
    a, b, c = snapshot(2, 400), snapshot(2, 400), snapshot(3, 400)
    assert cache.put(b"a", a)
    assert cache.put(b"b", b)
    assert cache.longest([b"x", b"a"]) is a  # touches a
    assert cache.put(b"c", c)
    assert b"b" not in cache
    assert b"a" in cache
    assert b"c" in cache
    assert cache.bytes == a.nbytes + c.nbytes <= cache.budget_bytes
    assert cache.evictions == 1
    assert cache.longest([b"a", b"c"]) is c  # the longest stored prefix wins
    assert cache.longest([b"b"]) is None


def test_cache_refuses_a_snapshot_larger_than_the_budget() -> None:
    """A snapshot that cannot fit even alone is refused and evicts nothing."""
    cache = PrefixCache(budget_bytes=1000)
    assert cache.put(b"a", snapshot(2, 400))
    assert not cache.put(b"huge", snapshot(2, 2000))
    assert len(cache) == 1
    assert b"a" in cache
    assert cache.evictions == 0


# --- the real model ------------------------------------------------------------------------


@pytest.mark.model
async def test_shared_system_prompt_skips_prefill_after_unrelated_request(
    plain: TinyBackend,
) -> None:
    """A ~600-token system prompt seen once is restored for the next request that shares it,
    even with an unrelated prompt in between: its prefill is skipped (fewer tokens decoded,
    reported as cached_tokens, also on the stream's last chunk) and the greedy answers are
    exactly those of the model without the cache."""
    system = system_prompt(24, "Acme Ltd")
    first, second = chat(system, "How do refunds work?"), chat(system, "Can I reset my password?")
    cached = backend("tiny-prefix")
    try:
        one = await cached.acomplete(first)
        assert stats(cached)["stores"] == 1
        await cached.acomplete(UNRELATED)  # replaces the live context
        spy = EvalSpy(cached._llm)
        cached._llm.eval = spy
        chunks = [chunk async for chunk in cached.astream(second)]
        shared = system_turn_tokens(cached, system)
    finally:
        await cached.aclose()
    two_text = "".join(chunk.delta for chunk in chunks)
    final = chunks[-1].usage
    assert final is not None
    assert shared >= 600
    assert final.cached_tokens >= shared // BLOCK * BLOCK
    assert spy.prompt_tokens_decoded(final.prompt_tokens) == (
        final.prompt_tokens - final.cached_tokens
    )
    assert one.usage.cached_tokens < BLOCK  # the first request had nothing to reuse

    await plain.acomplete(UNRELATED)  # whatever an earlier test left, the context is unrelated
    reference_two = await plain.acomplete(second)
    assert reference_two.usage.cached_tokens < BLOCK  # without the cache: a full prefill
    assert reference_two.usage.prompt_tokens == final.prompt_tokens
    assert two_text == reference_two.text
    assert len(two_text) > 20


@pytest.mark.model
async def test_byte_budget_evicts_least_recently_used_prefix() -> None:
    """With room for two stored prefixes, a third evicts the least recently used one: the
    prefix used again in between survives and is restored, the other is prefilled anew; the
    stored bytes never exceed the budget."""
    systems = {name: system_prompt(5, name) for name in ("Alpha Co", "Beta Co", "Gamma Co")}
    requests = {name: chat(system, "Hello?", max_tokens=4) for name, system in systems.items()}
    budget = 7 * MB
    lru = backend("tiny-lru", prefix_cache_mb=7)
    try:
        spy = await spied(lru)

        async def ask(name: str) -> int:
            result = await lru.acomplete(requests[name])
            usage = result.usage
            assert 2 * BLOCK <= usage.prompt_tokens < 3 * BLOCK  # stores two blocks
            assert stats(lru)["bytes"] <= budget
            assert spy.prompt_tokens_decoded(usage.prompt_tokens) == (
                usage.prompt_tokens - usage.cached_tokens
            )
            return usage.cached_tokens

        assert await ask("Alpha Co") < BLOCK
        entry_bytes = stats(lru)["bytes"]
        assert 2 * entry_bytes <= budget < 3 * entry_bytes  # room for exactly two entries
        assert await ask("Beta Co") < BLOCK
        assert await ask("Alpha Co") >= 2 * BLOCK  # restored, and now the most recently used
        assert await ask("Gamma Co") < BLOCK  # stored: evicts Beta, not Alpha
        after = stats(lru)
        assert (after["entries"], after["evictions"], after["stores"]) == (2, 1, 3)
        assert await ask("Alpha Co") >= 2 * BLOCK
        assert await ask("Beta Co") < BLOCK  # was evicted: prefilled again
        assert stats(lru)["restores"] == 2
    finally:
        await lru.aclose()


@pytest.mark.model
async def test_storing_a_prefix_cuts_the_live_context_and_reports_it() -> None:
    """When the live context shares more than the block prefix being stored, it is cut to that
    prefix for the snapshot; cached_tokens then counts only what was really not decoded."""
    system = system_prompt(5, "Hotel Co")
    short, longer = chat(system, "Hello?", max_tokens=4), chat(system, "Hello? " * 30, max_tokens=4)
    one_entry = backend("tiny-cut", prefix_cache_mb=5)  # room for one two- or three-block state
    try:
        spy = await spied(one_entry)
        results = []
        for request in (short, longer, short):
            result = await one_entry.acomplete(request)
            usage = result.usage
            decoded = spy.prompt_tokens_decoded(usage.prompt_tokens)
            assert decoded == usage.prompt_tokens - usage.cached_tokens
            results.append(result)
        after = stats(one_entry)
    finally:
        await one_entry.aclose()
    assert 2 * BLOCK <= results[0].usage.prompt_tokens < 3 * BLOCK
    assert results[1].usage.prompt_tokens >= 3 * BLOCK
    # The third request shares the system turn (and more) with the live context, but its own
    # two-block prefix was evicted by the longer request's: stored again, from a cut context.
    assert results[2].usage.cached_tokens == 2 * BLOCK
    assert (after["stores"], after["evictions"], after["entries"]) == (3, 2, 1)
    assert results[2].text == results[0].text


@pytest.mark.model
async def test_budget_too_small_stores_nothing(plain: TinyBackend) -> None:
    """A budget smaller than one prefix's state stores nothing, and answers are unchanged."""
    request = chat(system_prompt(5, "Delta Co"), "Hello?", max_tokens=12)
    small = backend("tiny-small", prefix_cache_mb=0.5)
    try:
        first = await small.acomplete(request)
        await small.acomplete(UNRELATED)
        again = await small.acomplete(request)
        after = stats(small)
    finally:
        await small.aclose()
    assert first.usage.prompt_tokens >= 2 * BLOCK
    assert (after["entries"], after["stores"], after["bytes"]) == (0, 0, 0)
    assert again.usage.cached_tokens < BLOCK
    reference = await plain.acomplete(request)
    assert first.text == again.text == reference.text


@pytest.mark.model
async def test_prompt_shorter_than_the_minimum_is_not_stored() -> None:
    """A prompt with one full block but fewer than prefix_min_blocks (2) is not stored."""
    request = chat(system_prompt(2, "Echo Co"), "Hello?", max_tokens=4)
    short = backend("tiny-short")
    try:
        result = await short.acomplete(request)
        after = stats(short)
    finally:
        await short.aclose()
    assert BLOCK <= result.usage.prompt_tokens < 2 * BLOCK
    assert (after["enabled"], after["entries"], after["stores"]) == (True, 0, 0)


@pytest.mark.model
async def test_cache_off_keeps_only_live_context_reuse(plain: TinyBackend) -> None:
    """With prefix_cache_mb 0 nothing is stored: a repeated prompt reuses the live context
    (all but the one token decoded again), but not once another prompt ran in between."""
    request = chat(system_prompt(6, "Foxtrot Co"), "Hello?", max_tokens=6)
    assert plain.info.extra["prefix_cache"] == {"enabled": False}
    first = await plain.acomplete(request)
    repeat = await plain.acomplete(request)
    await plain.acomplete(UNRELATED)
    after_other = await plain.acomplete(request)
    assert first.usage.prompt_tokens >= 2 * BLOCK
    assert repeat.usage.cached_tokens == repeat.usage.prompt_tokens - 1
    assert after_other.usage.cached_tokens < BLOCK
    # Both full evaluations agree. The repeat decodes only the prompt's last token on top of the
    # live context, one token where the first ran a batch: llama.cpp's single-token and batched
    # kernels round differently, and on a build for AVX2 CPUs (the Makefile's, see
    # LLAMA_CMAKE_ARGS) the greedy answer drifts after its first words ("Hello! I'm glad to"
    # then "Hello!"). So the repeat is held to answering, not to the same words.
    assert first.text == after_other.text
    assert repeat.text
    assert repeat.usage.completion_tokens > 0


async def test_one_scope_never_reuses_what_another_left() -> None:
    """What a request leaves in the model (the live context, a stored prefix) is reused only
    by requests of the same ``cache_scope`` (the gateway sets it from the caller's team or
    key): another team sending the same system prompt prefills it in full, so neither its
    ``cached_tokens`` nor its speed tells it what the first team sent. The same scope still
    reuses it, and no scope (``None``) shares with everyone, as before."""
    system = system_prompt(24, "Nightjar Ltd")
    asked = chat(system, "How do refunds work?")
    cached = backend("tiny-scoped")
    try:
        alpha = replace(asked, cache_scope="team:alpha")
        first = await cached.acomplete(alpha)
        other = await cached.acomplete(replace(asked, cache_scope="team:beta"))
        again = await cached.acomplete(alpha)
        shared = [await cached.acomplete(asked) for _ in range(2)]
    finally:
        await cached.aclose()
    assert first.usage.cached_tokens < BLOCK
    assert other.usage.cached_tokens < BLOCK  # neither the live context nor the stored prefix
    assert again.usage.cached_tokens >= 8 * BLOCK  # its own team's prefix, stored by the first
    assert shared[1].usage.cached_tokens >= 8 * BLOCK
    assert other.text == first.text == again.text  # greedy: the same answer either way

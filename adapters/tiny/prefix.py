"""Prefix reuse for the tiny tier: llama.cpp state kept for shared prompt prefixes.

``Llama.generate`` already skips the prefill of whatever prefix a prompt shares with the tokens
*currently* in the context. Once another request has run, that context holds something else and
a long common system prompt must be prefilled again. So the backend keeps snapshots of the
context, each holding exactly a block-aligned prompt prefix, keyed by a chained block hash:

* the prompt's llama tokens are cut into fixed blocks (``prefix_block_tokens``), and
  ``hash_i = H(hash_{i-1} + block_i)``, so one hash names a whole prefix;
* before a request, the longest stored prefix of its prompt is restored when it is longer than
  what the live context already shares; ``generate``'s own prefix match then skips it;
* a prompt whose longest full-block prefix (at least ``prefix_min_blocks`` blocks) is not
  stored yet has that prefix prefilled first and snapshotted *before* the rest of the prompt is
  evaluated, so the snapshot holds exactly the prefix (a live context that already shared more
  is cut back to it), then stored, least-recently-used entries evicted to stay under
  ``prefix_cache_mb``.

Why not ``Llama.save_state()`` / ``load_state()`` (llama-cpp-python 0.3.36): besides the llama.cpp
state, ``LlamaState`` carries ``scores``, a copy of ``Llama.scores[:n_tokens]``. Without
``logits_all`` that array has ``n_batch`` rows of ``n_vocab`` floats and is never written any
more (sampling happens inside llama.cpp's sampler), yet it is copied on save and twice on load:
100 MB per state for SmolLM2 (512 x 49,152 x 4 bytes), uncounted by ``llama_state_size``; for
a 1,500-token context, 85 ms to save and 44 ms to load (300 / 460 ms the first time in a
process). ``load_state`` also overwrites the sampling seed with the saved one. So this module
makes the same ``llama_state_get_data`` / ``llama_state_set_data`` calls and keeps only the
prefix's token ids: 23 ms / 5 ms and 35 MB (bench/results/tiny-prefix.json).

Everything here runs on the backend's single worker thread, as all llama work does. The hashes
are over llama tokens: they name prefixes for this model only, unlike the gateway's registry
(tiktoken tokens).
"""

from __future__ import annotations

import ctypes
import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TOKEN = "i"  # a C int, as llama_token


def block_hashes(tokens: Sequence[int], block: int, scope: str | None = None) -> list[bytes]:
    """The chained hash of every full block of ``tokens``: item ``i`` names the prefix of
    ``(i + 1) * block`` tokens (within ``scope``: another scope's hashes differ)."""
    hashes: list[bytes] = []
    previous = b"" if scope is None else hashlib.blake2b(scope.encode(), digest_size=16).digest()
    for end in range(block, len(tokens) + 1, block):
        chunk = array(_TOKEN, tokens[end - block : end]).tobytes()
        previous = hashlib.blake2b(previous + chunk, digest_size=16).digest()
        hashes.append(previous)
    return hashes


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """The llama.cpp context state holding exactly ``ids`` (a prompt prefix)."""

    ids: array[int]
    data: Any  # a ctypes c_uint8 array from llama_state_get_data
    size: int  # bytes of ``data`` llama.cpp wrote

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(ctypes.sizeof(self.data)) + self.ids.itemsize * len(self.ids)


class PrefixCache:
    """Snapshots by prefix hash, least recently used first, within a byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, Snapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def longest(self, hashes: Sequence[bytes]) -> Snapshot | None:
        """The stored snapshot of the longest prefix named in ``hashes``. Every stored prefix
        named there counts as used, so a shared system prompt stays while conversations that
        extend it come and go."""
        found: Snapshot | None = None
        for key in hashes:
            snapshot = self._entries.get(key)
            if snapshot is not None:
                self._entries.move_to_end(key)
                found = snapshot
        return found

    def put(self, key: bytes, snapshot: Snapshot) -> bool:
        """Store ``snapshot``, evicting the least recently used entries to make room; a
        snapshot larger than the whole budget is refused (returns false) and evicts nothing."""
        if snapshot.nbytes > self.budget_bytes:
            return False
        self.discard(key)
        while self._entries and self.bytes + snapshot.nbytes > self.budget_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = snapshot
        self.bytes += snapshot.nbytes
        return True

    def discard(self, key: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def live_prefix(llm: Any, prompt: Sequence[int]) -> int:
    """How many leading tokens of ``prompt`` the live context already holds."""
    import numpy as np

    n = min(int(llm.n_tokens), len(prompt))
    if n == 0:
        return 0
    differ = np.flatnonzero(llm.input_ids[:n] != np.asarray(prompt[:n], dtype=np.intc))
    return int(differ[0]) if differ.size else n


def take_snapshot(llm: Any, limit_bytes: int) -> Snapshot | None:
    """The context's state (what ``Llama.save_state`` copies, minus ``scores``), or ``None``
    when it would not fit in ``limit_bytes``."""
    import llama_cpp

    ctx = llm._ctx.ctx
    n = int(llm.n_tokens)
    size = int(llama_cpp.llama_state_get_size(ctx))
    if size + n * array(_TOKEN).itemsize > limit_bytes:
        return None
    data = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_get_data(ctx, data, size))
    if written > size:  # llama.cpp says it cannot happen; Llama.save_state checks it too
        return None
    return Snapshot(ids=array(_TOKEN, llm.input_ids[:n].tolist()), data=data, size=written)


def restore_snapshot(llm: Any, snapshot: Snapshot) -> bool:
    """Put ``snapshot`` back into the context (``Llama.load_state`` minus ``scores`` and the
    seed); false when llama.cpp refused it, the context then being empty."""
    import llama_cpp

    read = int(llama_cpp.llama_state_set_data(llm._ctx.ctx, snapshot.data, snapshot.size))
    if read != snapshot.size:
        _empty(llm)
        return False
    n = snapshot.n_tokens
    llm.input_ids[:n] = snapshot.ids
    llm.n_tokens = n
    # The restored logits are those of whatever was decoded last, so generate() must decode
    # at least one prompt token before sampling (it replays one if the prompt is all cached).
    llm._requires_eval = True
    return True


def _truncate(llm: Any, n: int) -> bool:
    """Drop the context after its first ``n`` tokens; false (and the context emptied) if
    llama.cpp cannot cut this model's memory there."""
    if llm.n_tokens > n:
        if not llm._ctx.kv_cache_seq_rm(-1, n, -1):
            _empty(llm)
            return False
        llm.n_tokens = n
        llm._requires_eval = True
    return True


def _empty(llm: Any) -> None:
    llm.reset()
    llm._ctx.kv_cache_clear()


class PrefixReuse:
    """The tiny backend's prefix cache and the steps around a generation that use it."""

    def __init__(self, budget_mb: float, block_tokens: int, min_blocks: int) -> None:
        self.block_tokens = block_tokens
        self.min_blocks = min_blocks
        self.cache = PrefixCache(int(budget_mb * 1024 * 1024)) if budget_mb > 0 else None
        self.restores = 0
        self.stores = 0
        # Once a prefix of this many tokens did not fit the budget, longer ones are not tried.
        self._too_large_from: int | None = None
        self._live_scope: str | None = None  # whose request left the live context

    def disable(self) -> None:
        """For models whose context cannot be cut at a token (recurrent or hybrid ones)."""
        self.cache = None

    def clear(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def stats(self) -> dict[str, int | bool]:
        """Counters for ``BackendInfo.extra`` (read from other threads: plain ints only)."""
        cache = self.cache
        if cache is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "entries": len(cache),
            "bytes": cache.bytes,
            "budget_bytes": cache.budget_bytes,
            "block_tokens": self.block_tokens,
            "restores": self.restores,
            "stores": self.stores,
            "evictions": cache.evictions,
        }

    def prepare(self, llm: Any, prompt: Sequence[int], scope: str | None = None) -> int:
        """Make the live context start with the longest prefix of ``prompt`` available, storing
        a snapshot of the prompt's block prefix if it is new; returns how many prompt tokens were
        not prefilled for this request (the rest is prefilled here or by ``generate``). Only
        what requests of the same ``scope`` left is reused (None: shared by every caller): a
        context another scope left is emptied first, and stored prefixes are keyed by scope."""
        if scope != self._live_scope and int(llm.n_tokens):
            _empty(llm)
        self._live_scope = scope
        live = live_prefix(llm, prompt)
        cache = self.cache
        if cache is None or len(prompt) < self.block_tokens * self.min_blocks:
            return live
        hashes = block_hashes(prompt, self.block_tokens, scope)
        stored = cache.longest(hashes)
        if stored is not None and stored.n_tokens > live:
            live = stored.n_tokens if restore_snapshot(llm, stored) else 0
            if live:
                self.restores += 1
            else:
                cache.discard(hashes[stored.n_tokens // self.block_tokens - 1])
        return self._remember(llm, prompt, hashes, live)

    def _remember(self, llm: Any, prompt: Sequence[int], hashes: list[bytes], live: int) -> int:
        """Store the prompt's longest block prefix if it is new. Returns how many of the
        ``live`` tokens the context still holds: storing cuts it to exactly that prefix, and a
        failed cut or decode empties it (generate() then meets the failure and reports it)."""
        cache = self.cache
        assert cache is not None
        target = len(hashes) * self.block_tokens
        if hashes[-1] in cache or (
            self._too_large_from is not None and target >= self._too_large_from
        ):
            return live
        # Leave exactly prompt[:target] in the context, prefilling what is missing.
        if not _truncate(llm, min(live, target)):
            return 0
        if live < target:
            try:
                llm.eval(prompt[live:target])
            except RuntimeError:  # llama_decode failed
                _empty(llm)
                return 0
        snapshot = take_snapshot(llm, cache.budget_bytes)
        llm._requires_eval = True
        if snapshot is None or not cache.put(hashes[-1], snapshot):
            self._too_large_from = min(target, self._too_large_from or target)
        else:
            self.stores += 1
        return min(live, target)

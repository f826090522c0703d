"""The generation loop of the artifact backend: one prefill of the prompt, then one forward
step per token over the KV cache, sampling each token, streaming its text, and stopping at EOS,
a stop string, ``max_tokens`` or whatever ``check`` raises (cancellation, the deadline).

Only generated tokens are ever decoded: the prompt's ids are never part of the completion, so
there is nothing to slice off (the pitfall of ``generate()``, whose output repeats the prompt).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from adapters._text import StopScanner
from adapters.artifact.decode import IncrementalDecoder
from adapters.artifact.runtime import Loaded
from adapters.chat import FinishReason


@dataclass(frozen=True, slots=True)
class Sampling:
    """How each token is chosen. ``temperature`` 0 is greedy (the argmax; no randomness).

    The penalties are OpenAI's: before anything else (greedy included), each token's logit is
    lowered by ``presence_penalty`` if it was generated before and by ``frequency_penalty``
    times the number of times it was (the prompt does not count).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the loop produced: the text (never the prompt), the generated token ids (EOS not
    included), why it stopped (and at which stop string, if one), and when the first text was
    emitted (``perf_counter``)."""

    text: str
    completion_ids: tuple[int, ...]
    finish: FinishReason
    first_text_at: float | None
    stop_sequence: str | None = None


def penalise(logits: torch.Tensor, sampling: Sampling, counts: torch.Tensor) -> torch.Tensor:
    """``logits`` less the penalties for tokens generated so far (``counts``, one per token id:
    how many times it was generated)."""
    scores = logits.float().cpu()
    return (
        scores
        - sampling.frequency_penalty * counts
        - sampling.presence_penalty * (counts > 0).to(scores.dtype)
    )


def next_token(
    logits: torch.Tensor,
    sampling: Sampling,
    generator: torch.Generator,
    counts: torch.Tensor | None = None,
) -> int:
    """One token from a vector of next-token logits; ``counts`` (generated tokens per id)
    when ``sampling`` has penalties."""
    if counts is not None:
        logits = penalise(logits, sampling, counts)
    if sampling.temperature <= 0.0:
        return int(torch.argmax(logits).item())
    scores = logits.float().cpu() / sampling.temperature
    if sampling.top_k is not None and 0 < sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        # Keep the most likely tokens whose mass before them is below top_p (at least one).
        drop = torch.cumsum(ordered, dim=-1) - ordered >= sampling.top_p
        ordered = ordered.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def generate(
    loaded: Loaded,
    prompt_ids: Sequence[int],
    sampling: Sampling,
    *,
    stops: Sequence[str] = (),
    emit: Callable[[str], None] | None = None,
    check: Callable[[], None] = lambda: None,
) -> Outcome:
    """Generate after ``prompt_ids`` (already chat-templated and tokenized)."""
    model = loaded.model
    tokenizer = loaded.tokenizer
    generator = torch.Generator().manual_seed(sampling.seed)
    decoder = IncrementalDecoder(
        lambda ids: str(tokenizer.decode(list(ids), skip_special_tokens=True))
    )
    scanner = StopScanner(stops)
    parts: list[str] = []
    generated: list[int] = []
    finish: FinishReason = "length"
    stopped: str | None = None  # the stop string that ended the answer
    first_text_at: float | None = None

    def release(text: str) -> None:
        nonlocal first_text_at
        if not text:
            return
        if first_text_at is None:
            first_text_at = time.perf_counter()
        parts.append(text)
        if emit is not None:
            emit(text)

    with torch.inference_mode():
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=loaded.device)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        counts: torch.Tensor | None = None
        if sampling.penalised:
            counts = torch.zeros(out.logits.shape[-1], dtype=torch.float32)
        while len(generated) < sampling.max_tokens:
            token = next_token(out.logits[0, -1], sampling, generator, counts)
            if token in loaded.eos_ids:
                finish = "stop"
                break
            generated.append(token)
            if counts is not None:
                counts[token] += 1
            text, stopped = scanner.feed(decoder.add(token))
            release(text)
            if stopped is not None:
                finish = "stop"
                break
            if len(generated) >= sampling.max_tokens:
                break
            check()
            step = torch.tensor([[token]], dtype=torch.long, device=loaded.device)
            out = model(input_ids=step, cache=out.cache, use_cache=True, logits_to_keep=1)
    if stopped is None:
        tail, stopped = scanner.feed(decoder.flush())
        release(tail)
        if stopped is not None:
            finish = "stop"
        else:
            release(scanner.flush())
    return Outcome(
        text="".join(parts),
        completion_ids=tuple(generated),
        finish=finish,
        first_text_at=first_text_at,
        stop_sequence=stopped,
    )

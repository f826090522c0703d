"""What a stream has sent so far, per choice: pieces, their text, finish reasons (and the stop
strings that ended them), reported usage and the first token's time; at the end, or when the
stream is cut short, the usage and timings the ledger records (estimated, and flagged, for a
choice whose backend reported none: the text received, counted with the gateway's tokenizer)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from adapters.base import Chunk, FinishReason, ThinkingBlock, Timings, Usage
from gateway.routing.choices import sum_usage
from gateway.scoring.tokens import count_exact


@dataclass(slots=True)
class Tally:
    choices: int
    prompt_estimate: int  # the prompt as the scorer counted it
    started: float  # perf_counter() when the request arrived
    finish: list[FinishReason] = field(init=False)
    stop_sequences: list[str | None] = field(init=False)
    usages: list[Usage | None] = field(init=False)
    first_at: float | None = None
    timings: Timings | None = None  # what the backend reported for choice 0
    texts: list[str] = field(default_factory=list)  # choice 0's: the cache and shadow keep it
    thinking: list[ThinkingBlock] = field(default_factory=list)  # choice 0's thinking pieces
    received: list[list[str]] = field(init=False)  # each choice's text and tool-call pieces

    def __post_init__(self) -> None:
        self.finish = ["stop"] * self.choices
        self.stop_sequences = [None] * self.choices
        self.usages = [None] * self.choices
        self.received = [[] for _ in range(self.choices)]

    def add(self, index: int, chunk: Chunk) -> int:
        """Note one chunk of choice ``index``; returns how many pieces it sent the client."""
        sent = bool(chunk.tool_calls) + bool(chunk.delta) + bool(chunk.thinking)
        if sent:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            received = self.received[index]
            received.extend(piece.thinking for piece in chunk.thinking)
            if index == 0:
                self.thinking.extend(chunk.thinking)
            if chunk.delta:
                received.append(chunk.delta)
                if index == 0:
                    self.texts.append(chunk.delta)
            for call in chunk.tool_calls:
                received.append((call.name or "") + call.arguments)
        if chunk.finish_reason is not None:
            self.finish[index] = chunk.finish_reason
            self.stop_sequences[index] = chunk.stop_sequence
        if chunk.usage is not None:
            self.usages[index] = chunk.usage
        if chunk.timings is not None and index == 0:
            self.timings = chunk.timings
        return sent

    def usage(self) -> Usage:
        """Every call's tokens, at the end or so far (a stream cut short); a choice whose
        backend reported no usage counts the text received (tool calls' names and arguments
        included) and the prompt as the scorer saw it, flagged as estimated."""
        known = [
            u
            if u is not None
            else Usage(
                prompt_tokens=self.prompt_estimate,
                completion_tokens=count_exact("".join(pieces)),
                estimated=True,
            )
            for u, pieces in zip(self.usages, self.received, strict=True)
        ]
        return known[0] if self.choices == 1 else sum_usage(known)

    def final_timings(self) -> Timings:
        """Wall time and time to first token as the gateway saw them; the backend's own
        server and load times when it reported them."""
        ttft = (self.first_at - self.started) * 1000.0 if self.first_at is not None else None
        base = self.timings or Timings(latency_ms=0.0)
        return Timings(
            latency_ms=(time.perf_counter() - self.started) * 1000.0,
            ttft_ms=ttft,
            server_ms=base.server_ms,
            load_ms=base.load_ms,
        )

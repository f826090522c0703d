"""The judge: a backend that grades one answer against a reference answer, sampled and
rate-limited (it is usually a paid remote model). A canary's shadow calls ask it about the
candidate's answer against the stable one; the adaptive scorer's labels ask it about a cheaper
tier's answer against the next stronger tier's (``gateway.routing.judging``)."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable

from adapters.base import ChatRequest, Message

_GRADE = re.compile(r"\b(10|[0-9])(?:\.\d+)?\b")
_INSTRUCTIONS = (
    "You compare two answers to the same conversation. The reference answer comes from the "
    "model in production; the candidate answer from a model being evaluated. Grade the "
    "candidate from 0 (useless or wrong) to 10 (as good as or better than the reference). "
    "Reply with the number only."
)
_MAX_CHARS = 6000


# Grading a cheaper tier's answer against the stronger tier's, for the adaptive scorer.
TIER_INSTRUCTIONS = (
    "You compare two answers to the same conversation. The reference answer comes from a "
    "strong model; the candidate answer from a cheaper one. Grade the candidate from 0 (wrong, "
    "or clearly worse: the strong model was needed) to 10 (as good as or better than the "
    "reference). Reply with the number only."
)


def judge_request(
    request: ChatRequest, reference: str, candidate: str, *, instructions: str = _INSTRUCTIONS
) -> ChatRequest:
    conversation = "\n".join(f"{m.role}: {m.content}" for m in request.messages)[-_MAX_CHARS:]
    prompt = (
        f"Conversation:\n{conversation}\n\nReference answer:\n{reference[:_MAX_CHARS]}\n\n"
        f"Candidate answer:\n{candidate[:_MAX_CHARS]}\n\nGrade (0-10):"
    )
    return ChatRequest(
        messages=(Message(role="system", content=instructions), Message("user", prompt)),
        max_tokens=8,
        temperature=0.0,
    )


def parse_grade(text: str) -> float | None:
    """The first 0-10 number in the judge's reply, as 0-1; None when there is none."""
    match = _GRADE.search(text)
    return None if match is None else int(match.group(1)) / 10.0


class RateLimit:
    """At most ``per_minute`` acquisitions in any 60 s (a sliding window)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._times: deque[float] = deque()

    def acquire(self) -> bool:
        now = self._clock()
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        if len(self._times) >= self._per_minute:
            return False
        self._times.append(now)
        return True

"""The sliding-window-counter arithmetic the rate limits share, whatever stores the counters.

A limit of ``limit`` per ``window_s`` keeps two counters: the current fixed window's and the
previous one's. The count that is compared with the limit weighs the previous window by the part
of it still inside the sliding window (``limits``' SlidingWindowCounter does the same, which is
what the in-process fallback runs on):

    weighted = floor(prev * (1 - elapsed / window_s)) + cur

From those three numbers come what a caller is told: how much is left, when a refused request
would fit (``retry-after``) and when the limit is back to its initial state (OpenAI's
``x-ratelimit-reset-*``), written the way OpenAI writes durations (``20ms``, ``1s``, ``6m0s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    """One limit to check for one subject: ``key`` names its counters (no secret in it)."""

    name: str  # what ``limited_by`` says: "key:k-1:requests", "team:t-9:tokens"
    key: str  # the counters' name without the store's prefix: "key:k-1:r"
    dimension: str  # "requests" or "tokens"
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class Counts:
    """A limit's two counters as a store saw them (``cur`` after this request's cost, when it
    was admitted) and how far into the current fixed window that was, in seconds."""

    prev: int
    cur: int
    elapsed_s: float


_PAST = 0.001  # a millisecond past the instant a cost fits (the inequality is strict)


def weighted(counts: Counts, window_s: float) -> int:
    share = max(0.0, 1.0 - counts.elapsed_s / window_s)
    return math.floor(counts.prev * share) + counts.cur


def remaining(check: Check, counts: Counts, window_s: float) -> int:
    return max(0, check.limit - weighted(counts, window_s))


def fits(check: Check, counts: Counts, window_s: float) -> bool:
    return weighted(counts, window_s) + check.cost <= check.limit


def wait_s(check: Check, counts: Counts, window_s: float) -> float | None:
    """Seconds until ``check.cost`` fits (0 when it does now); None when it never can (the
    cost alone is over the limit). ``floor(prev * share) <= room`` holds once
    ``prev * share < room + 1``: a millisecond past that instant is the answer."""
    if check.cost > check.limit:
        return None
    room = check.limit - check.cost - counts.cur
    if room >= 0:
        if counts.prev <= room:
            return 0.0
        # the previous window's share must fall below room + 1
        at = window_s * (1.0 - (room + 1) / counts.prev)
        return max(0.0, at - counts.elapsed_s) + _PAST
    # only once this window is the previous one, its count must fall below limit - cost + 1
    left_in_window = max(0.0, window_s - counts.elapsed_s)
    at = window_s * max(0.0, 1.0 - (check.limit - check.cost + 1) / counts.cur)
    return left_in_window + at + _PAST


def reset_s(counts: Counts, window_s: float) -> float:
    """Seconds until nothing is counted any more (the limit back to its initial state)."""
    left_in_window = max(0.0, window_s - counts.elapsed_s)
    if counts.cur > 0:
        return left_in_window + window_s
    if counts.prev > 0:
        return left_in_window
    return 0.0


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's style): ``0s``, ``20ms``, ``1.5s``, ``6m0s``."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


_DIMENSIONS = ("requests", "tokens")
_NAMES = {
    dimension: tuple(
        f"x-ratelimit-{field}-{dimension}" for field in ("limit", "remaining", "reset")
    )
    for dimension in _DIMENSIONS
}


def headers(
    checks: Sequence[Check],
    counts: Sequence[Counts],
    window_s: float,
    retry_after_s: float | None,
) -> tuple[tuple[str, str], ...]:
    """OpenAI's rate-limit headers, for each dimension the tightest limit's (the one with the
    least remaining; the smaller limit on a tie); ``retry-after`` (whole seconds, at least 1)
    when a request was refused and waiting helps. (On every governed answer: ``remaining``
    and ``weighted`` written out inline.)"""
    found: dict[str, tuple[int, int, Counts]] = {}  # dimension → (left, limit, counts)
    for check, count in zip(checks, counts, strict=True):
        share = 1.0 - count.elapsed_s / window_s
        weighted = math.floor(count.prev * share) + count.cur if share > 0.0 else count.cur
        left = check.limit - weighted
        if left < 0:
            left = 0
        best = found.get(check.dimension)
        if best is None or left < best[0] or (left == best[0] and check.limit < best[1]):
            found[check.dimension] = (left, check.limit, count)
    out: list[tuple[str, str]] = []
    tightest = [(_NAMES[d], found[d]) for d in _DIMENSIONS if d in found]
    for names, (_, limit, _) in tightest:
        out.append((names[0], str(limit)))
    for names, (left, _, _) in tightest:
        out.append((names[1], str(left)))
    for names, (_, _, count) in tightest:
        out.append((names[2], duration(reset_s(count, window_s))))
    if retry_after_s is not None:
        out.append(("retry-after", str(max(1, math.ceil(retry_after_s)))))
    return tuple(out)

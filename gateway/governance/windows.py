"""The sliding-window-counter arithmetic the rate limits share, whatever stores the counters.

A limit of ``limit`` per ``window_s`` keeps two counters: the current fixed window's and the
previous one's. The count that is compared with the limit weighs the previous window by the part
of it still inside the sliding window (``limits``' SlidingWindowCounter does the same, which is
what the in-process fallback runs on):

    weighted = floor(prev * (1 - elapsed / window_s)) + cur

From those three numbers come what a caller is told: how much is left, when a refused request
would fit (``retry-after``) and when what is counted starts to leave the limit (OpenAI's
``x-ratelimit-reset-*``, never more than a window away: ``reset_s``), written the way OpenAI
writes durations (``20ms``, ``1s``, ``6m0s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Check:
    """One limit to check for one subject: ``key`` names its counters (no secret in it)."""

    name: str  # what ``limited_by`` says: "key:k-1:requests", "team:t-9:tokens"
    key: str  # the counters' name without the store's prefix: "key:k-1:r"
    dimension: str  # "requests" or "tokens"
    limit: int
    cost: int


class Counts(NamedTuple):
    """A limit's two counters as a store saw them (``cur`` after this request's cost, when it
    was admitted) and how far into the current fixed window that was, in seconds. (A named
    tuple, not a frozen dataclass: one is made per limit per request, at half the cost.)"""

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
    """Seconds until what is counted starts to leave the limit (0 when nothing is): the end of
    the current fixed window, at most ``window_s`` away. By then the previous window's share has
    gone entirely, and the requests counted since start to be weighed out.

    Not "until nothing is counted": the weighted count forgets a fixed window's requests over
    the whole next window, so that would be up to two windows away (``1m56s`` for a
    per-minute limit), where a limit of N per window lets a client expect its answer within
    the window. When the request itself fits again is ``retry-after`` (``wait_s``)."""
    if weighted(counts, window_s) <= 0:
        return 0.0
    return max(0.0, window_s - counts.elapsed_s)


_last_duration: tuple[int, str] = (0, "0s")  # the last duration written, in milliseconds


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's style): ``0s``, ``20ms``, ``1.5s``, ``6m0s``."""
    global _last_duration
    millis = round(seconds * 1000)
    last = _last_duration
    if last[0] == millis:  # requests of one loop turn share their reset, to the millisecond
        return last[1]
    text = _written(millis)
    _last_duration = (millis, text)  # replaced whole: another thread never sees half of it
    return text


def _written(millis: int) -> str:
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, part = divmod(millis, 1000)
    text = f"{secs}.{part:03d}".rstrip("0") + "s" if part else f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def headers(
    checks: Sequence[Check],
    counts: Sequence[Counts],
    window_s: float,
    retry_after_s: float | None,
) -> tuple[tuple[str, str], ...]:
    """OpenAI's rate-limit headers, for each dimension the tightest limit's (the one with the
    least remaining; the smaller limit on a tie); ``retry-after`` (whole seconds, at least 1)
    when a request was refused and waiting helps. (On every governed answer: one pass, with
    ``weighted`` and ``remaining`` written out inline.)"""
    requests: tuple[int, int, Counts] | None = None  # (left, limit, counts) of the tightest
    tokens: tuple[int, int, Counts] | None = None
    for check, count in zip(checks, counts, strict=True):
        prev, cur = count.prev, count.cur
        if prev:
            share = 1.0 - count.elapsed_s / window_s
            if share > 0.0:
                cur += math.floor(prev * share)
        limit = check.limit
        left = limit - cur if cur < limit else 0
        if check.dimension == "requests":
            if (
                requests is None
                or left < requests[0]
                or (left == requests[0] and limit < requests[1])
            ):
                requests = (left, limit, count)
        elif tokens is None or left < tokens[0] or (left == tokens[0] and limit < tokens[1]):
            tokens = (left, limit, count)
    if requests is not None and tokens is not None:
        said: tuple[tuple[str, str], ...] = (
            ("x-ratelimit-limit-requests", str(requests[1])),
            ("x-ratelimit-limit-tokens", str(tokens[1])),
            ("x-ratelimit-remaining-requests", str(requests[0])),
            ("x-ratelimit-remaining-tokens", str(tokens[0])),
            ("x-ratelimit-reset-requests", duration(reset_s(requests[2], window_s))),
            ("x-ratelimit-reset-tokens", duration(reset_s(tokens[2], window_s))),
        )
    else:
        said = ()
        for dimension, best in (("requests", requests), ("tokens", tokens)):
            if best is not None:
                said = (
                    (f"x-ratelimit-limit-{dimension}", str(best[1])),
                    (f"x-ratelimit-remaining-{dimension}", str(best[0])),
                    (f"x-ratelimit-reset-{dimension}", duration(reset_s(best[2], window_s))),
                )
    if retry_after_s is not None:
        said += (("retry-after", str(max(1, math.ceil(retry_after_s)))),)
    return said

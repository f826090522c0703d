"""The percentile every ledger figure uses (the savings report's and the canary's latencies):
the nearest-rank method, p-th percentile = the ceil(p/100 x n)-th smallest value.

Over a long window the savings report reads latencies from histograms (the ledger's
``ledger_latency_daily``, migration 0014) instead of every value: bin ``b`` holds the values in
[RATIO^b, RATIO^(b+1)) ms, and a percentile is its bin's geometric middle, RATIO^(b + 1/2),
within ``MAX_RELATIVE_ERROR`` (sqrt(RATIO) - 1, under 1%) of the exact nearest-rank value; a
value of 0 (or less) has a bin of its own and comes back as 0."""

from __future__ import annotations

import math
from collections.abc import Mapping

RATIO = 1.02  # the same in migration 0014's trigger
ZERO_BIN = -1_000_000
MAX_RELATIVE_ERROR = 0.01  # sqrt(1.02) - 1 = 0.00995
_LOG_RATIO = math.log(RATIO)


def nearest_rank(values: list[float], percentile: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[rank - 1]


def bin_of(value: float) -> int:
    """The histogram bin of ``value`` ms (as the trigger computes it in SQL)."""
    if value <= 0:
        return ZERO_BIN
    return math.floor(math.log(value) / _LOG_RATIO)


def binned_rank(counts: Mapping[int, int], percentile: float) -> float | None:
    """The nearest-rank percentile of the values counted per bin in ``counts``, as its bin's
    geometric middle (0 for the zero bin)."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(percentile / 100.0 * total))
    seen = 0
    for b in sorted(counts):
        seen += counts[b]
        if seen >= rank:
            return 0.0 if b == ZERO_BIN else RATIO ** (b + 0.5)
    raise AssertionError("unreachable: the ranks add up to the total")

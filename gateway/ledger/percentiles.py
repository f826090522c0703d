"""The percentile every ledger figure uses (the savings report's and the canary's latencies):
the nearest-rank method, p-th percentile = the ceil(p/100 x n)-th smallest value."""

from __future__ import annotations

import math


def nearest_rank(values: list[float], percentile: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[rank - 1]

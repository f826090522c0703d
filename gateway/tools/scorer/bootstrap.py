"""APGR in numpy (the same number as ``quality.apgr(quality.curve(...))``, fast enough to
recompute a thousand times) and its bootstrap interval.

The interval resamples the prompts with replacement (paired: every router of a group is
scored on the same resamples) and takes the 2.5th and 97.5th percentiles of APGR. The
generator is seeded from the seed and the group's name, so the same data, seed and group give
the same interval whichever routers are compared or in what order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float
    resamples: int  # those with a quality gap (a resample where both models tie is skipped)


def apgr_of(
    scores: NDArray[np.float64], weak: NDArray[np.float64], strong: NDArray[np.float64]
) -> float:
    """The area under PGR over the share sent to the strong model; equal scores move as one
    group (the straight line a random tie-break gives in expectation). NaN if no gap."""
    n = len(scores)
    gap = float(strong.sum() - weak.sum())
    if n == 0 or gap == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    recovered = np.cumsum((strong - weak)[order]) / gap
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    share = np.concatenate([[0.0], (ends + 1) / n])
    pgr = np.concatenate([[0.0], recovered[ends]])
    return float((np.diff(share) * (pgr[1:] + pgr[:-1]) / 2).sum())


def resamples_for(group: str, n: int, count: int, seed: int) -> NDArray[np.int64]:
    """``count`` bootstrap resamples of ``n`` prompts (one row of indices each)."""
    rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
    drawn: NDArray[np.int64] = rng.integers(0, n, size=(count, n))
    return drawn


def interval(
    scores: ArrayLike,
    weak: ArrayLike,
    strong: ArrayLike,
    draws: NDArray[np.int64],
    level: float = 0.95,
) -> Interval:
    """The percentile bootstrap interval of APGR over ``draws`` (from ``resamples_for``)."""
    s, w, st = (np.asarray(v, dtype=np.float64) for v in (scores, weak, strong))
    values = np.array([apgr_of(s[d], w[d], st[d]) for d in draws])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), 0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), len(values))

"""RouteLLM's router metrics, computed exactly over the full threshold sweep.

Route the highest-scored prompts to the strong model and the rest to the weak one; sweep the
share sent to the strong model from 0 to 1. At each share the quality is the mean, over the
prompts, of the quality of the model each one went to, and

* PGR (performance gap recovered) = (quality - weak quality) / (strong quality - weak quality);
* APGR = the area under PGR over the share (0.5 for a random router);
* CPT(x) (call-performance threshold) = the smallest share of strong calls at which PGR
  reaches x.

Prompts with equal scores cannot be told apart by a threshold, so a tie group moves to the
strong model as a whole; the curve between two groups is the straight line a random tie-break
gives in expectation. A router that gives every prompt the same score is therefore exactly the
random router: the diagonal, APGR 0.5, CPT(x) = x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Curve:
    """PGR at each tie-group boundary, share ascending from 0 to 1."""

    share: tuple[float, ...]
    pgr: tuple[float, ...]
    weak_quality: float
    strong_quality: float

    def quality(self, pgr: float) -> float:
        return self.weak_quality + pgr * (self.strong_quality - self.weak_quality)


def curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> Curve:
    n = len(scores)
    if n == 0 or len(weak) != n or len(strong) != n:
        raise ValueError("need one weak and one strong quality per score, and at least one")
    weak_mean, strong_mean = sum(weak) / n, sum(strong) / n
    gap = sum(strong) - sum(weak)
    if gap == 0:
        raise ValueError(
            "the weak and the strong model have the same mean quality here, so PGR is undefined"
        )
    order = sorted(range(n), key=lambda i: -scores[i])
    shares, pgrs = [0.0], [0.0]
    recovered = 0.0
    for position, i in enumerate(order):
        recovered += strong[i] - weak[i]
        last = position == n - 1
        if last or scores[order[position + 1]] != scores[i]:
            shares.append((position + 1) / n)
            pgrs.append(recovered / gap)
    return Curve(tuple(shares), tuple(pgrs), weak_mean, strong_mean)


def apgr(c: Curve) -> float:
    """Area under PGR over the share (trapezoids between tie-group boundaries: exact)."""
    return sum(
        (c.share[i] - c.share[i - 1]) * (c.pgr[i] + c.pgr[i - 1]) / 2
        for i in range(1, len(c.share))
    )


def cpt(c: Curve, target: float) -> float:
    """The smallest share of strong calls at which PGR reaches ``target`` (interpolating within
    a tie group); 1.0 if it never does."""
    for i in range(1, len(c.share)):
        if c.pgr[i] >= target:
            if c.pgr[i - 1] >= target:
                return c.share[i - 1]
            step = (target - c.pgr[i - 1]) / (c.pgr[i] - c.pgr[i - 1])
            return c.share[i - 1] + step * (c.share[i] - c.share[i - 1])
    return 1.0


def pgr_at(c: Curve, share: float) -> float:
    """PGR when ``share`` of the prompts go to the strong model (linear within a tie group)."""
    for i in range(1, len(c.share)):
        if share <= c.share[i]:
            width = c.share[i] - c.share[i - 1]
            step = (share - c.share[i - 1]) / width if width else 1.0
            return c.pgr[i - 1] + step * (c.pgr[i] - c.pgr[i - 1])
    return c.pgr[-1]

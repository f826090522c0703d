"""The savings report's figures of one group of ledger rows: what each number means, counted
from the rows by ``Tally`` (pure arithmetic, no database; ``gateway.ledger.report_scan`` sums
alike rows in the database, ``gateway.ledger.report`` groups them).

Definitions (per group and in total):

* cost = the sum over rows whose cost is known, the gateway's own background calls included
  (``overhead``, below); rows whose cost is unknown (an unpriced backend) are counted in
  ``unpriced`` and left out of the money columns rather than counted as $0; baseline is over the
  client rows whose cost and baseline are both known (``compared``); savings = baseline - cost
  of those rows - overhead, and savings % = savings / baseline; both ``None`` when no row of
  the report has a baseline (a policy without one);
* cost per 1M tokens = cost (overhead included) / (prompt + completion tokens of the priced
  client rows) x 1,000,000;
* latency and time-to-first-token percentiles use the nearest-rank method over answered (200)
  requests (``gateway.ledger.percentiles``): exact, or, over a window of many answered requests,
  from latency histograms, within 1% (``gateway.ledger.report_window``);
* feedback (``/v1/feedback`` scores) and judge (the adaptive scorer's judge grades of cheaper
  answers against the stronger tier's, 0..1): the mean and how many, per group of the request
  rated, so a small sample shows as small;
* fallback rate = requests passed on to another backend after a try failed / requests (a
  retry on the same backend is none, nor a cascade's escalation: as ``x-tiergate-fallbacks``);
  error rate = requests answered with an error status / requests; abandoned rate = requests the
  client left before the end (status 499) / requests; cache hit rate = requests served from the
  cache / requests;
* by tier (one ledger row per request, not per try): a request counts in the tier that answered
  it; one that no backend answered, in every tier it tried, in order, as one group of its own
  ("cheap>strong": it failed on cheap, then on strong; a group named after one tier holds only
  that tier's failures), and by backend under the backend tried last, whose error it returned
  (its ``fallback_chain`` names each);
* money: the ledger's 12 decimals, kept (a float: exact up to 15 significant digits, any figure
  under $1,000); cost per 1M tokens to 4 decimals, or 4 significant digits when smaller. A try
  that timed out on a backend priced by machine time is in its request's cost: the box worked
  until the timeout (``gateway.routing.accounting``).

The gateway's own background calls (rows whose ``canary_arm`` is in ``OVERHEAD_ARMS``: a
canary's shadow and judge calls, the adaptive scorer's judged samples) are not client traffic:
they are left out of the request counts, tokens, latencies and rates, and their cost is routing's
``overhead`` (with ``overhead_calls``): part of cost, and taken off the savings, since without
routing they would not have been spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from gateway.ledger.adaptive import OVERHEAD_ARMS
from gateway.ledger.percentiles import binned_rank, nearest_rank

if TYPE_CHECKING:
    from gateway.ledger.report_scan import Bucket


@dataclass(slots=True)
class Tally:
    """One group's running totals, a row at a time; ``figures`` turns them into the report's
    numbers."""

    requests: int = 0
    priced: int = 0  # cost known
    compared: int = 0  # cost and baseline known
    unpriced: int = 0
    estimated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    priced_tokens: int = 0
    cost: Decimal = Decimal(0)
    compared_cost: Decimal = Decimal(0)
    baseline: Decimal = Decimal(0)
    errors: int = 0
    abandoned: int = 0
    fallbacks: int = 0
    cache_hits: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    # Or, over a long window, their histograms (``percentiles.bin_of``): bin -> requests.
    latency_bins: dict[int, int] = field(default_factory=dict)
    ttft_bins: dict[int, int] = field(default_factory=dict)
    feedback_sum: float = 0.0
    feedback_count: int = 0
    judge_sum: float = 0.0
    judge_count: int = 0
    overhead_calls: int = 0
    overhead: Decimal = Decimal(0)

    def add(self, bucket: Bucket) -> None:
        """Count ``bucket.n`` alike rows (``report_scan.buckets``); their latencies come
        apart, through ``answered``."""
        n = bucket.n
        if bucket.canary_arm in OVERHEAD_ARMS:
            self._add_overhead(bucket)
            return
        self.requests += n
        self.prompt_tokens += bucket.prompt_tokens
        self.completion_tokens += bucket.completion_tokens
        self.cached_tokens += bucket.cached_tokens
        self.estimated += n if bucket.usage_estimated else 0
        if bucket.cost_known:
            self.priced += n
            self.cost += bucket.cost
            self.priced_tokens += bucket.prompt_tokens + bucket.completion_tokens
            if bucket.baseline_known:
                self.compared += n
                self.compared_cost += bucket.cost
                self.baseline += bucket.baseline
        else:
            self.unpriced += n
        if bucket.status == 499:
            self.abandoned += n  # the client left: not the gateway's error
        elif bucket.status != 200:
            self.errors += n
        self.fallbacks += n if _moved_on(bucket.fallback_chain, bucket.escalated) else 0
        self.cache_hits += n if bucket.hit else 0

    def answered(self, latency_ms: float, ttft_ms: float | None) -> None:
        """One answered (200) client request's latency and time to first token."""
        self.latencies.append(latency_ms)
        if ttft_ms is not None:
            self.ttfts.append(ttft_ms)

    def binned(self, metric: str, bin_: int, requests: int) -> None:
        """``requests`` answered client requests whose latency (``metric`` "latency") or time
        to first token ("ttft") falls in ``bin_``."""
        bins = self.latency_bins if metric == "latency" else self.ttft_bins
        bins[bin_] = bins.get(bin_, 0) + requests

    def _add_overhead(self, bucket: Bucket) -> None:
        """Background calls: their cost is routing's overhead; they are no client's requests."""
        self.overhead_calls += bucket.n
        if not bucket.cost_known:
            self.unpriced += bucket.n  # left out of the money columns: said, as for a request
            return
        self.cost += bucket.cost
        self.overhead += bucket.cost

    def figures(self, baselined: bool) -> dict[str, Any]:
        """The group's figures; ``baselined``: whether the report has a baseline at all (a
        group of background calls alone then shows their cost as a loss, so groups add up)."""
        compared = self.compared > 0 or (baselined and self.overhead_calls > 0)
        savings = self.baseline - self.compared_cost - self.overhead
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": usd(self.cost),
            "overhead_usd": usd(self.overhead),
            "overhead_calls": self.overhead_calls,
            "baseline_cost_usd": usd(self.baseline) if compared else None,
            "savings_usd": usd(savings) if compared else None,
            "savings_pct": _ratio(savings * 100, self.baseline) if compared else None,
            "cost_per_1m_tokens_usd": _per_million(self.cost, self.priced_tokens),
            "latency_ms_p50": _ms(self._percentile(self.latencies, self.latency_bins, 50)),
            "latency_ms_p95": _ms(self._percentile(self.latencies, self.latency_bins, 95)),
            "ttft_ms_p50": _ms(self._percentile(self.ttfts, self.ttft_bins, 50)),
            "fallback_rate": _rate(self.fallbacks, self.requests),
            "error_rate": _rate(self.errors, self.requests),
            "abandoned_rate": _rate(self.abandoned, self.requests),
            "cache_hit_rate": _rate(self.cache_hits, self.requests),
            "priced_requests": self.priced,
            "compared_requests": self.compared,
            "unpriced_requests": self.unpriced,
            "estimated_usage_requests": self.estimated,
            "feedback_avg": _mean(self.feedback_sum, self.feedback_count),
            "feedback_count": self.feedback_count,
            "judge_avg": _mean(self.judge_sum, self.judge_count),
            "judge_count": self.judge_count,
        }

    @staticmethod
    def _percentile(values: list[float], bins: dict[int, int], p: float) -> float | None:
        return binned_rank(bins, p) if bins else nearest_rank(values, p)


def _mean(total: float, count: int) -> float | None:
    return round(total / count, 4) if count else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# The ledger keeps money to 12 decimals (``models.MONEY``): the report keeps every one. A tiny
# model's request costs a few 1e-8 USD; 8 places would print 4.1234e-08 as 4e-08.
MONEY_PLACES = 12


def usd(value: Decimal) -> float:
    """Dollars as the report shows them: a float with every decimal the ledger keeps (a float
    holds them exactly up to 15 significant digits: any figure under $1,000)."""
    return float(round(value, MONEY_PLACES))


def _per_million(cost: Decimal, tokens: int) -> float | None:
    """Cost per 1M tokens: 4 decimals, or 4 significant digits when it is smaller (a tiny
    model's 0.001649 would be 0.0016 to 4 places, and 0.00003 would be 0.0)."""
    if tokens == 0:
        return None
    value = cost * 1_000_000 / tokens
    if value == 0:
        return 0.0
    places = max(4, 3 - value.copy_abs().adjusted())
    return float(round(value, min(places, MONEY_PLACES)))


def _ratio(numerator: Decimal, denominator: Decimal) -> float | None:
    if denominator == 0:
        return None
    return float(round(numerator / denominator, 4))


def _rate(count: int, total: int) -> float | None:
    return None if total == 0 else round(count / total, 4)


# The CSV's columns: the group's key, then every figure of the JSON report in its order, then
# what the JSON says of the whole window (``REPORT_FIELDS``), repeated on every line.
FIGURE_FIELDS = (
    "key",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "overhead_usd",
    "overhead_calls",
    "baseline_cost_usd",
    "savings_usd",
    "savings_pct",
    "cost_per_1m_tokens_usd",
    "latency_ms_p50",
    "latency_ms_p95",
    "ttft_ms_p50",
    "fallback_rate",
    "error_rate",
    "abandoned_rate",
    "cache_hit_rate",
    "priced_requests",
    "compared_requests",
    "unpriced_requests",
    "estimated_usage_requests",
    "feedback_avg",
    "feedback_count",
    "judge_avg",
    "judge_count",
)
# A spreadsheet of the CSV alone must say what the money is in and what it is compared with,
# as the JSON and the table do: the currency, the baseline models (``baselines``, in words) and
# how a baseline cost is computed (empty when no request of the window has one).
REPORT_FIELDS = ("currency", "baselines", "baseline_basis")
CSV_FIELDS = (*FIGURE_FIELDS, *REPORT_FIELDS)


def _moved_on(chain: str, escalated: bool = False) -> bool:
    """Whether a request's ``fallback_chain`` ("small>small>big") was passed on to another
    backend after a try failed: a retry on the same backend is an attempt too, but no fallback,
    and neither is a cascade's escalation (``escalated``: the cheap tier answered, unsure, and
    the request went up a tier), the one move of its chain that no failure caused."""
    backends = chain.split(">")
    moves = sum(b != a for a, b in pairwise(backends))
    return moves > (1 if escalated else 0)

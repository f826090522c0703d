"""The cost-savings report, checked against figures worked out by hand from a fixed ledger: the
function, ``tiergate report`` in its three formats, and the admin API, on both databases."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.ledger.adaptive import FEEDBACK, JUDGE, LABEL_JUDGE, LABEL_STRONG, insert_label
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.entry import LedgerEntry
from gateway.ledger.percentiles import nearest_rank
from gateway.ledger.report import BASELINE_BASIS, build_report, parse_since
from gateway.ledger.report_figures import CSV_FIELDS
from gateway.ledger.store import insert_batch
from tests.http.helpers import TWO_TIERS, gateway

D = Decimal

# The fixed ledger. Two days (20 and 21 November 2026, UTC), three tiers, two routes, two
# backends, two keys. Columns:
#   day, time, key, route, tier, backend, status, attempts, chain, cache,
#   prompt, completion, cached, estimated, latency ms, ttft ms, cost, baseline, cost source
ROWS: list[tuple[Any, ...]] = [
    # r1: a plain cheap answer
    (20, "10:00", "team-a", "auto", "cheap", "local", 200, 1, "local", "miss",
     100, 50, 0, False, 100.0, None, D("0.0001"), D("0.0015"), "policy"),
    # r2: a cache hit: free, but the baseline would have paid
    (20, "10:05", "team-a", "auto", "cheap", "local", 200, 1, "local", "hit",
     200, 100, 0, False, 5.0, None, D("0"), D("0.003"), "cache"),
    # r3: a stream
    (20, "11:00", "team-b", "code", "cheap", "local", 200, 1, "local", "miss",
     150, 150, 0, False, 300.0, 20.0, D("0.0003"), D("0.0045"), "policy"),
    # r4: a fallback from local to remote, answered
    (20, "12:00", "team-b", "auto", "strong", "remote", 200, 2, "local>remote", "miss",
     400, 200, 0, False, 900.0, None, D("0.004"), D("0.006"), "litellm"),
    # r5: failed (502), nothing billed
    (20, "13:00", "team-a", "code", "strong", "remote", 502, 1, "remote", "miss",
     0, 0, 0, False, 1500.0, None, D("0"), D("0"), "failed"),
    # r6: an unpriced backend: counted, but left out of the money columns
    (20, "14:00", "team-a", "auto", "mid", "local", 200, 1, "local", "miss",
     300, 100, 0, False, 400.0, None, None, D("0.003"), "unpriced"),
    # r7: a stream the client abandoned (499), usage estimated
    (20, "15:00", "team-b", "auto", "mid", "local", 499, 1, "local", "miss",
     50, 10, 0, True, 250.0, 30.0, D("0.00002"), D("0.0002"), "policy"),
    # r8
    (21, "09:00", "team-a", "auto", "cheap", "local", 200, 1, "local", "miss",
     80, 40, 0, False, 120.0, None, D("0.00008"), D("0.0012"), "policy"),
    # r9: the baseline model itself (no saving), a stream with cached prompt tokens
    (21, "09:30", "team-a", "code", "strong", "remote", 200, 1, "remote", "miss",
     1000, 500, 200, False, 2000.0, 200.0, D("0.012"), D("0.012"), "litellm"),
    # r10: timed out (504) after a fallback
    (21, "10:00", "team-b", "auto", "strong", "remote", 504, 2, "local>remote", "miss",
     0, 0, 0, False, 3000.0, None, D("0"), D("0"), "failed"),
    # r11: another cache hit
    (21, "11:00", "team-b", "code", "cheap", "local", 200, 1, "local", "hit",
     120, 60, 0, False, 4.0, None, D("0"), D("0.0018"), "cache"),
    # r12: a stream on the mid tier
    (21, "12:00", "team-a", "auto", "mid", "local", 200, 1, "local", "miss",
     500, 250, 0, False, 600.0, 80.0, D("0.0005"), D("0.0075"), "policy"),
]  # fmt: skip

# Just outside the window [20 Nov 00:00, 22 Nov 00:00): big numbers that would show at once.
OUTSIDE: list[tuple[Any, ...]] = [
    (19, "23:59:59", "team-a", "auto", "cheap", "local", 200, 1, "local", "miss",
     9000, 9000, 0, False, 1.0, None, D("1"), D("2"), "policy"),
    (22, "00:00", "team-a", "auto", "cheap", "local", 200, 1, "local", "miss",
     9000, 9000, 0, False, 1.0, None, D("1"), D("2"), "policy"),
]  # fmt: skip

SINCE, UNTIL = "2026-11-20", "2026-11-22"

# --- the figures, by hand ---------------------------------------------------------------------
#
# Totals, 12 requests (r1..r12):
#   prompt     = 100+200+150+400+0+300+50+80+1000+0+120+500 = 2900
#   completion = 50+100+150+200+0+100+10+40+500+0+60+250   = 1460;  cached = 200 (r9)
#   priced rows: all but r6 (11); unpriced 1
#   cost     = .0001+0+.0003+.004+0+.00002+.00008+.012+0+0+.0005          = 0.017
#   baseline = .0015+.003+.0045+.006+0+.0002+.0012+.012+0+.0018+.0075      = 0.0377 (r6 left out)
#   savings  = 0.0377 - 0.017 = 0.0207;  savings % = 0.0207 / 0.0377 x 100 = 54.90716 -> 54.9072
#   priced tokens = (2900 + 1460) - (300 + 100, r6) = 3960
#   cost per 1M tokens = 0.017 / 3960 x 1e6 = 4.292929 -> 4.2929
#   latencies of the 200s (r1 r2 r3 r4 r6 r8 r9 r11 r12), sorted: 4 5 100 120 300 400 600 900 2000
#     p50: rank ceil(0.50 x 9) = 5 -> 300;  p95: rank ceil(0.95 x 9) = ceil(8.55) = 9 -> 2000
#   ttft of the 200s: r3 20, r9 200, r12 80 -> sorted 20 80 200; p50: rank ceil(1.5) = 2 -> 80
#   fallbacks (attempts > 1): r4 r10 -> 2/12 = 0.1667;  errors (5xx): r5 r10 -> 2/12 = 0.1667
#   abandoned (499, the client left): r7 -> 1/12 = 0.0833;  compared (cost and baseline): 11
#   cache hits: r2 r11 -> 2/12 = 0.1667;  estimated usage: r7 -> 1
TOTALS: dict[str, Any] = {
    "requests": 12,
    "prompt_tokens": 2900,
    "completion_tokens": 1460,
    "cached_tokens": 200,
    "cost_usd": 0.017,
    "overhead_usd": 0.0,
    "overhead_calls": 0,
    "baseline_cost_usd": 0.0377,
    "savings_usd": 0.0207,
    "savings_pct": 54.9072,
    "cost_per_1m_tokens_usd": 4.2929,
    "latency_ms_p50": 300.0,
    "latency_ms_p95": 2000.0,
    "ttft_ms_p50": 80.0,
    "fallback_rate": 0.1667,
    "error_rate": 0.1667,
    "abandoned_rate": 0.0833,
    "cache_hit_rate": 0.1667,
    "priced_requests": 11,
    "compared_requests": 11,
    "unpriced_requests": 1,
    "estimated_usage_requests": 1,
    "feedback_avg": None,
    "feedback_count": 0,
    "judge_avg": None,
    "judge_count": 0,
}

# By tier:
# cheap (r1 r2 r3 r8 r11), 5 requests:
#   prompt 100+200+150+80+120 = 650; completion 50+100+150+40+60 = 400
#   cost .0001+0+.0003+.00008+0 = 0.00048; baseline .0015+.003+.0045+.0012+.0018 = 0.012
#   savings 0.01152; 0.01152 / 0.012 = 96 %; per 1M: 0.00048 / 1050 x 1e6 = 0.457142 -> 0.4571
#   latencies 4 5 100 120 300: p50 rank 3 -> 100, p95 rank ceil(4.75) = 5 -> 300; ttft: r3 20
#   fallbacks 0; errors 0; cache hits r2 r11 -> 2/5 = 0.4
# mid (r6 r7 r12), 3 requests:
#   prompt 300+50+500 = 850; completion 100+10+250 = 360
#   priced r7 r12: cost .00002+.0005 = 0.00052; baseline .0002+.0075 = 0.0077; savings 0.00718
#   0.00718 / 0.0077 = 93.246753 % -> 93.2468
#   per 1M: 0.00052 / (60 + 750) x 1e6 = 0.641975 -> 0.642
#   latencies of the 200s (r6 400, r12 600): p50 rank 1 -> 400, p95 rank ceil(1.9) = 2 -> 600
#   ttft r12 80; errors 0; abandoned r7 -> 1/3 = 0.3333; unpriced r6; estimated r7
# strong (r4 r5 r9 r10), 4 requests:
#   prompt 400+0+1000+0 = 1400; completion 200+0+500+0 = 700; cached 200
#   cost .004+0+.012+0 = 0.016; baseline .006+0+.012+0 = 0.018; savings 0.002
#   0.002 / 0.018 = 11.1111 %; per 1M: 0.016 / 2100 x 1e6 = 7.619047 -> 7.619
#   latencies r4 900, r9 2000: p50 900, p95 2000; ttft r9 200
#   fallbacks r4 r10 -> 2/4 = 0.5; errors r5 r10 -> 0.5
# (check: 0.00048 + 0.00052 + 0.016 = 0.017 and 0.012 + 0.0077 + 0.018 = 0.0377, the totals)
BY_TIER: dict[str, dict[str, Any]] = {
    "cheap": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 5, "prompt_tokens": 650, "completion_tokens": 400, "cached_tokens": 0,
        "cost_usd": 0.00048, "baseline_cost_usd": 0.012, "savings_usd": 0.01152,
        "savings_pct": 96.0, "cost_per_1m_tokens_usd": 0.4571,
        "latency_ms_p50": 100.0, "latency_ms_p95": 300.0, "ttft_ms_p50": 20.0,
        "fallback_rate": 0.0, "error_rate": 0.0, "abandoned_rate": 0.0,
        "cache_hit_rate": 0.4,
        "priced_requests": 5, "compared_requests": 5,
        "unpriced_requests": 0, "estimated_usage_requests": 0,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
    "mid": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 3, "prompt_tokens": 850, "completion_tokens": 360, "cached_tokens": 0,
        "cost_usd": 0.00052, "baseline_cost_usd": 0.0077, "savings_usd": 0.00718,
        "savings_pct": 93.2468, "cost_per_1m_tokens_usd": 0.642,
        "latency_ms_p50": 400.0, "latency_ms_p95": 600.0, "ttft_ms_p50": 80.0,
        "fallback_rate": 0.0, "error_rate": 0.0, "abandoned_rate": 0.3333,
        "cache_hit_rate": 0.0,
        "priced_requests": 2, "compared_requests": 2,
        "unpriced_requests": 1, "estimated_usage_requests": 1,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
    "strong": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 4, "prompt_tokens": 1400, "completion_tokens": 700, "cached_tokens": 200,
        "cost_usd": 0.016, "baseline_cost_usd": 0.018, "savings_usd": 0.002,
        "savings_pct": 11.1111, "cost_per_1m_tokens_usd": 7.619,
        "latency_ms_p50": 900.0, "latency_ms_p95": 2000.0, "ttft_ms_p50": 200.0,
        "fallback_rate": 0.5, "error_rate": 0.5, "abandoned_rate": 0.0,
        "cache_hit_rate": 0.0,
        "priced_requests": 4, "compared_requests": 4,
        "unpriced_requests": 0, "estimated_usage_requests": 0,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
}  # fmt: skip

# By day:
# 2026-11-20 (r1..r7), 7 requests:
#   prompt 100+200+150+400+0+300+50 = 1200; completion 50+100+150+200+0+100+10 = 610
#   priced (all but r6): cost .0001+0+.0003+.004+0+.00002 = 0.00442;
#   baseline .0015+.003+.0045+.006+0+.0002 = 0.0152; savings 0.01078; 0.01078 / 0.0152 = 70.9211 %
#   per 1M: 0.00442 / (1810 - 400) x 1e6 = 3.134751 -> 3.1348
#   latencies (r1 100, r2 5, r3 300, r4 900, r6 400) sorted 5 100 300 400 900: p50 rank 3 -> 300,
#   p95 rank 5 -> 900; ttft r3 20; fallbacks r4 1/7 = 0.1429; errors r5 1/7 = 0.1429;
#   abandoned r7 1/7 = 0.1429;
#   cache hits r2 1/7 = 0.1429
# 2026-11-21 (r8..r12), 5 requests:
#   prompt 80+1000+0+120+500 = 1700; completion 40+500+0+60+250 = 850
#   cost .00008+.012+0+0+.0005 = 0.01258; baseline .0012+.012+0+.0018+.0075 = 0.0225
#   savings 0.00992; 0.00992 / 0.0225 = 44.0889 %; per 1M: 0.01258 / 2550 x 1e6 = 4.9333
#   latencies (r8 120, r9 2000, r11 4, r12 600) sorted 4 120 600 2000: p50 rank 2 -> 120,
#   p95 rank ceil(3.8) = 4 -> 2000; ttft (r9 200, r12 80): p50 rank 1 -> 80
#   fallbacks r10 1/5 = 0.2; errors r10 0.2; cache hits r11 0.2
BY_DAY: dict[str, dict[str, Any]] = {
    "2026-11-20": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 7, "prompt_tokens": 1200, "completion_tokens": 610, "cached_tokens": 0,
        "cost_usd": 0.00442, "baseline_cost_usd": 0.0152, "savings_usd": 0.01078,
        "savings_pct": 70.9211, "cost_per_1m_tokens_usd": 3.1348,
        "latency_ms_p50": 300.0, "latency_ms_p95": 900.0, "ttft_ms_p50": 20.0,
        "fallback_rate": 0.1429, "error_rate": 0.1429, "abandoned_rate": 0.1429,
        "cache_hit_rate": 0.1429,
        "priced_requests": 6, "compared_requests": 6,
        "unpriced_requests": 1, "estimated_usage_requests": 1,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
    "2026-11-21": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 5, "prompt_tokens": 1700, "completion_tokens": 850, "cached_tokens": 200,
        "cost_usd": 0.01258, "baseline_cost_usd": 0.0225, "savings_usd": 0.00992,
        "savings_pct": 44.0889, "cost_per_1m_tokens_usd": 4.9333,
        "latency_ms_p50": 120.0, "latency_ms_p95": 2000.0, "ttft_ms_p50": 80.0,
        "fallback_rate": 0.2, "error_rate": 0.2, "abandoned_rate": 0.0,
        "cache_hit_rate": 0.2,
        "priced_requests": 5, "compared_requests": 5,
        "unpriced_requests": 0, "estimated_usage_requests": 0,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
}  # fmt: skip

# By key:
# team-a (r1 r2 r5 r6 r8 r9 r12), 7 requests:
#   prompt 100+200+0+300+80+1000+500 = 2180; completion 50+100+0+100+40+500+250 = 1040
#   priced (all but r6): cost .0001+0+0+.00008+.012+.0005 = 0.01268;
#   baseline .0015+.003+0+.0012+.012+.0075 = 0.0252; savings 0.01252; 0.01252 / 0.0252 = 49.6825 %
#   per 1M: 0.01268 / (3220 - 400) x 1e6 = 4.496453 -> 4.4965
#   latencies (r1 100, r2 5, r6 400, r8 120, r9 2000, r12 600) sorted 5 100 120 400 600 2000:
#   p50 rank 3 -> 120, p95 rank ceil(5.7) = 6 -> 2000; ttft (r9 200, r12 80): p50 rank 1 -> 80
#   fallbacks 0; errors r5 1/7 = 0.1429; cache hits r2 1/7 = 0.1429
# team-b (r3 r4 r7 r10 r11), 5 requests:
#   prompt 150+400+50+0+120 = 720; completion 150+200+10+0+60 = 420
#   cost .0003+.004+.00002+0+0 = 0.00432; baseline .0045+.006+.0002+0+.0018 = 0.0125
#   savings 0.00818; 0.00818 / 0.0125 = 65.44 %; per 1M: 0.00432 / 1140 x 1e6 = 3.789473 -> 3.7895
#   latencies (r3 300, r4 900, r11 4) sorted 4 300 900: p50 rank 2 -> 300, p95 rank 3 -> 900
#   ttft r3 20; fallbacks r4 r10 2/5 = 0.4; errors r10 0.2; abandoned r7 0.2;
#   cache hits r11 0.2
BY_KEY: dict[str, dict[str, Any]] = {
    "team-a": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 7, "prompt_tokens": 2180, "completion_tokens": 1040, "cached_tokens": 200,
        "cost_usd": 0.01268, "baseline_cost_usd": 0.0252, "savings_usd": 0.01252,
        "savings_pct": 49.6825, "cost_per_1m_tokens_usd": 4.4965,
        "latency_ms_p50": 120.0, "latency_ms_p95": 2000.0, "ttft_ms_p50": 80.0,
        "fallback_rate": 0.0, "error_rate": 0.1429, "abandoned_rate": 0.0,
        "cache_hit_rate": 0.1429,
        "priced_requests": 6, "compared_requests": 6,
        "unpriced_requests": 1, "estimated_usage_requests": 0,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
    "team-b": {
        "overhead_usd": 0.0, "overhead_calls": 0,
        "requests": 5, "prompt_tokens": 720, "completion_tokens": 420, "cached_tokens": 0,
        "cost_usd": 0.00432, "baseline_cost_usd": 0.0125, "savings_usd": 0.00818,
        "savings_pct": 65.44, "cost_per_1m_tokens_usd": 3.7895,
        "latency_ms_p50": 300.0, "latency_ms_p95": 900.0, "ttft_ms_p50": 20.0,
        "fallback_rate": 0.4, "error_rate": 0.2, "abandoned_rate": 0.2,
        "cache_hit_rate": 0.2,
        "priced_requests": 5, "compared_requests": 5,
        "unpriced_requests": 0, "estimated_usage_requests": 1,
        "feedback_avg": None, "feedback_count": 0,
        "judge_avg": None, "judge_count": 0,
    },
}  # fmt: skip


def to_entry(number: int, row: tuple[Any, ...]) -> LedgerEntry:
    day, clock, key, route, tier, backend, status, attempts, chain, cache, *rest = row
    prompt, completion, cached, estimated, latency, ttft, cost, baseline, source = rest
    hour, minute, second = (int(p) for p in f"{clock}:00"[:8].split(":"))
    return LedgerEntry(
        id=f"00000000-0000-7000-8000-{number:012d}",
        ts=datetime(2026, 11, day, hour, minute, second, tzinfo=UTC),
        key_id=key,
        policy_hash="0123456789abcdef",
        route=route,
        tier=tier,
        backend=backend,
        model=f"{backend}-model",
        score=0.5,
        cache=cache,
        canary_arm=None,
        status=status,
        error_class=None if status in (200, 499) else "upstream_error",
        attempts=attempts,
        fallback_chain=chain,
        stream=ttft is not None,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        usage_estimated=estimated,
        latency_ms=latency,
        ttft_ms=ttft,
        server_ms=None,
        load_ms=None,
        cost_usd=cost,
        cost_source=source,
        baseline_cost_usd=baseline,
    )


@pytest.fixture
def ledger(ledger_url: str) -> str:
    """The fixed ledger (the rows above plus two just outside the window), migrated; its URL."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, [to_entry(i, r) for i, r in enumerate(ROWS + OUTSIDE, start=1)])
    finally:
        engine.dispose()
    return ledger_url


def report(url: str, by: str | None = None, **window: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        return build_report(
            engine,
            since=parse_since(window.get("since", SINCE)),
            until=parse_since(window.get("until", UNTIL)),
            by=by,
        )
    finally:
        engine.dispose()


def groups(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["key"]: {k: v for k, v in g.items() if k != "key"} for g in result["groups"]}


# --- build_report -----------------------------------------------------------------------------


def test_totals_match_the_hand_worked_figures(ledger: str) -> None:
    """Over the window, every total equals the figure worked out by hand above."""
    result = report(ledger)
    assert result["totals"] == TOTALS
    assert result["groups"] == []
    assert result["by"] is None


@pytest.mark.parametrize(("by", "expected"), [("tier", BY_TIER), ("day", BY_DAY), ("key", BY_KEY)])
def test_groups_match_the_hand_worked_figures(
    ledger: str, by: str, expected: dict[str, dict[str, Any]]
) -> None:
    """Grouped by tier, day or key, each group equals its hand-worked figures, in key order,
    and the totals are unchanged by the grouping."""
    result = report(ledger, by=by)
    assert [g["key"] for g in result["groups"]] == sorted(expected)
    assert groups(result) == expected
    assert result["totals"] == TOTALS


def test_the_window_excludes_rows_outside_it(ledger: str) -> None:
    """``since`` is inclusive and ``until`` exclusive; a window with a UTC offset means the same
    instant on both databases."""
    # 10:30Z to 12:00Z on the 20th, written at +01:00: r3 (11:00) only; r4 (12:00) is the end.
    narrow = report(ledger, since="2026-11-20T11:30:00+01:00", until="2026-11-20T13:00:00+01:00")
    assert narrow["totals"]["requests"] == 1
    assert narrow["totals"]["prompt_tokens"] == 150  # r3
    # One second earlier at the start and later at the end takes in the two rows outside.
    wide = report(ledger, since="2026-11-19T23:59:59", until="2026-11-22T00:00:01")
    assert wide["totals"]["requests"] == 14
    assert wide["totals"]["prompt_tokens"] == 2900 + 2 * 9000
    empty = report(ledger, since="2026-11-23", until="2026-11-24")
    assert empty["totals"]["requests"] == 0
    assert empty["totals"]["savings_pct"] is None
    assert empty["totals"]["latency_ms_p50"] is None


def test_background_calls_are_routing_overhead_taken_off_the_savings(ledger: str) -> None:
    """The gateway's own calls (a canary's shadow and judge calls, the adaptive scorer's judged
    samples) are no client request: no request figure counts them. Their cost is routing's
    overhead: in the cost, and off the savings (before, a shadow or judge call's cost raised
    the cost but not the savings, and judged samples were left out of both, so "saved" claimed
    more than baseline - cost). Groups still add up to the totals."""
    first = to_entry(90, ROWS[0])
    own = [
        dataclasses.replace(
            first,
            id=f"00000000-0000-7000-8000-0000000000{90 + i}",
            canary_arm=arm,
            tier=tier,
            backend=backend,
            status=status,
            prompt_tokens=7000,
            latency_ms=99_999.0,
            cost_usd=cost,
            cost_source="failed" if status != 200 else "litellm",
            baseline_cost_usd=None,
        )
        for i, (arm, tier, backend, status, cost) in enumerate(
            [
                ("shadow", "mid", "local-new", 200, D("0.0002")),
                ("judge", "mid", "remote", 200, D("0.0008")),
                (LABEL_STRONG, "strong", "remote", 200, D("0.003")),
                (LABEL_JUDGE, "strong", "remote", 502, D("0.0005")),
            ]
        )
    ]
    engine = make_engine(ledger)
    try:
        insert_batch(engine, own)
    finally:
        engine.dispose()
    # overhead = .0002 + .0008 + .003 + .0005 = 0.0045; cost = 0.017 + 0.0045 = 0.0215
    # savings = 0.0377 - 0.017 - 0.0045 = 0.0162; 0.0162 / 0.0377 = 42.970822 % -> 42.9708
    # cost per 1M = 0.0215 / 3960 x 1e6 = 5.429292 -> 5.4293
    money = {
        "cost_usd": 0.0215,
        "overhead_usd": 0.0045,
        "overhead_calls": 4,
        "savings_usd": 0.0162,
        "savings_pct": 42.9708,
        "cost_per_1m_tokens_usd": 5.4293,
    }
    result = report(ledger)
    assert result["totals"] == {**TOTALS, **money}
    assert result["totals"]["baseline_cost_usd"] - result["totals"]["cost_usd"] == pytest.approx(
        result["totals"]["savings_usd"]
    )
    assert result["labelling"] == {"calls": 2, "cost_usd": 0.0035}
    # mid: + shadow and judge, 0.001: cost 0.00152, savings 0.0077 - 0.00052 - 0.001 = 0.00618,
    #   80.2597 %, per 1M 0.00152 / 810 x 1e6 = 1.876543 -> 1.8765
    # strong: + the judged sample, 0.0035: cost 0.0195, savings 0.018 - 0.016 - 0.0035 = -0.0015,
    #   -8.3333 %, per 1M 0.0195 / 2100 x 1e6 = 9.285714 -> 9.2857
    by_tier = groups(report(ledger, by="tier"))
    assert by_tier == {
        "cheap": BY_TIER["cheap"],
        "mid": {
            **BY_TIER["mid"],
            "cost_usd": 0.00152, "overhead_usd": 0.001, "overhead_calls": 2,
            "savings_usd": 0.00618, "savings_pct": 80.2597, "cost_per_1m_tokens_usd": 1.8765,
        },
        "strong": {
            **BY_TIER["strong"],
            "cost_usd": 0.0195, "overhead_usd": 0.0035, "overhead_calls": 2,
            "savings_usd": -0.0015, "savings_pct": -8.3333, "cost_per_1m_tokens_usd": 9.2857,
        },
    }  # fmt: skip
    assert sum(g["savings_usd"] for g in by_tier.values()) == pytest.approx(0.0162)
    # By canary arm, each kind of call apart: no request, its cost as a loss against no baseline.
    by_arm = groups(report(ledger, by="canary_arm"))
    assert list(by_arm) == ["-", "judge", LABEL_JUDGE, LABEL_STRONG, "shadow"]
    assert by_arm["-"]["requests"] == 12
    shadow = by_arm["shadow"]
    assert shadow["requests"] == shadow["prompt_tokens"] == 0
    assert shadow["latency_ms_p95"] is None
    assert shadow["error_rate"] is None
    assert (shadow["cost_usd"], shadow["overhead_usd"], shadow["overhead_calls"]) == (
        0.0002,
        0.0002,
        1,
    )
    assert (shadow["baseline_cost_usd"], shadow["savings_usd"], shadow["savings_pct"]) == (
        0.0,
        -0.0002,
        None,
    )
    assert report(ledger, since="2026-11-23", until="2026-11-24")["labelling"]["calls"] == 0


def test_judge_grades_show_next_to_the_savings_with_their_count(ledger: str) -> None:
    """The adaptive scorer's judge grades of cheaper answers (stored as labels, 1 - grade) are
    the report's ``judge_avg`` and ``judge_count``, per group of the request graded, like the
    feedback: a payer sees at what quality the cheaper tiers answered, and on how few samples.
    (Before, the report showed no judge figure.) Feedback labels and grades of requests outside
    the window do not count."""
    engine = make_engine(ledger)
    try:
        ids = {n: f"00000000-0000-7000-8000-{n:012d}" for n in (1, 3, 12, 13)}
        when = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
        insert_label(engine, ids[1], when, JUDGE, 0.2, b"x")  # r1 cheap: grade 0.8
        insert_label(engine, ids[3], when, JUDGE, 0.5, b"x")  # r3 cheap: grade 0.5
        insert_label(engine, ids[12], when, JUDGE, 0.7, b"x")  # r12 mid: grade 0.3
        insert_label(engine, ids[12], when, FEEDBACK, 0.0, b"x")  # feedback's label: not a grade
        insert_label(engine, ids[13], when, JUDGE, 0.0, b"x")  # outside the window
    finally:
        engine.dispose()
    # totals: (0.8 + 0.5 + 0.3) / 3 = 0.533333 -> 0.5333; cheap (0.8 + 0.5) / 2 = 0.65; mid 0.3
    result = report(ledger, by="tier")
    assert (result["totals"]["judge_avg"], result["totals"]["judge_count"]) == (0.5333, 3)
    judged = {k: (g["judge_avg"], g["judge_count"]) for k, g in groups(result).items()}
    assert judged == {"cheap": (0.65, 2), "mid": (0.3, 1), "strong": (None, 0)}
    assert result["totals"]["savings_usd"] == TOTALS["savings_usd"]


def test_nearest_rank() -> None:
    """The p-th percentile is the ceil(p/100 x n)-th smallest value."""
    values = [4.0, 5.0, 100.0, 120.0, 300.0, 400.0, 600.0, 900.0, 2000.0]
    assert nearest_rank(list(reversed(values)), 50) == 300.0  # rank ceil(4.5) = 5
    assert nearest_rank(values, 95) == 2000.0  # rank ceil(8.55) = 9
    assert nearest_rank(values, 0) == 4.0  # rank at least 1
    assert nearest_rank([7.0], 50) == 7.0
    assert nearest_rank([], 50) is None


def test_parse_since() -> None:
    """Relative spans count back from now; ISO times without an offset are UTC."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC)
    with pytest.raises(ValueError, match="7d, 12h, 30m or an ISO date"):
        parse_since("last week")
    # A span reaching before year 1 was an OverflowError: a 500 from /admin/report.
    for huge in ("99999999d", "9999999999999h", "1000000000d"):
        with pytest.raises(ValueError, match="before the year 1"):
            parse_since(huge, now)


# --- tiergate report --------------------------------------------------------------------------


def tiergate(*args: str, url: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    """The installed ``tiergate`` with only TIERGATE_DATABASE_URL set; exits with ``code``."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from gateway.cli.main import main; main()"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env["TIERGATE_DATABASE_URL"] = url
    done = subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == code, done.stderr
    return done


def cli_json(url: str, cwd: Path, *extra: str) -> dict[str, Any]:
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--format", "json", *extra, url=url, cwd=cwd
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_cli_json_has_the_same_figures(ledger: str, tmp_path: Path) -> None:
    """``tiergate report --format json`` prints the hand-worked totals and groups."""
    assert cli_json(ledger, tmp_path)["totals"] == TOTALS
    by_tier = cli_json(ledger, tmp_path, "--by", "tier")
    assert groups(by_tier) == BY_TIER
    assert by_tier["totals"] == TOTALS
    assert groups(cli_json(ledger, tmp_path, "--by", "day")) == BY_DAY
    assert groups(cli_json(ledger, tmp_path, "--by", "key")) == BY_KEY


def test_cli_csv_has_the_documented_columns(ledger: str, tmp_path: Path) -> None:
    """``--format csv`` has the documented header, one line per group and a total line, with
    the same figures."""
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--by", "tier", "--format", "csv",
        url=ledger, cwd=tmp_path,
    )  # fmt: skip
    lines = list(csv.reader(io.StringIO(done.stdout)))
    assert tuple(lines[0]) == CSV_FIELDS
    # every figure the JSON report has, in its order (the cached-token and priced / compared
    # request counts were missing, so a spreadsheet could not tell how many rows the money
    # rests on), then what it says of the whole window: the currency and the baselines
    assert tuple(lines[0]) == ("key", *TOTALS, "currency", "baselines", "baseline_basis")
    assert CSV_FIELDS[0] == "key"
    for name in ("requests", "cost_usd", "baseline_cost_usd", "savings_usd", "savings_pct"):
        assert name in CSV_FIELDS
    table = {row["key"]: row for row in csv.DictReader(io.StringIO(done.stdout))}
    assert list(table) == ["cheap", "mid", "strong", "total"]
    expected = {**BY_TIER, "total": TOTALS}
    for key, row in table.items():
        for name in TOTALS:
            want = expected[key][name]
            assert row[name] == ("" if want is None else str(want)), (key, name)
        assert row["currency"] == "USD"
        assert row["baseline_basis"] == BASELINE_BASIS


def test_cli_table_prints_every_group_and_the_unpriced_note(ledger: str, tmp_path: Path) -> None:
    """The table format shows a line per group and the total, the money as people read it, and
    says how many requests were left out of the money columns."""
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--by", "tier", url=ledger, cwd=tmp_path
    )
    out = done.stdout
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    assert {"cheap", "mid", "strong", "total"} <= set(lines)
    assert "0.017000" in lines["total"]  # cost $ (six decimals under a dollar)
    assert "54.9" in lines["total"]  # saved %
    assert "2,900" not in lines["total"]  # tokens are prompt + completion: 4,360
    assert "4,360" in lines["total"]
    assert "1 requests went to backends without a price" in out
    assert "1 requests have estimated token counts" in out  # r7, abandoned


def test_cli_table_never_shows_a_cost_that_is_not_zero_as_zero(
    ledger_url: str, tmp_path: Path
) -> None:
    """A local tier's cost for a few fast requests is well under a millionth of a dollar: the
    table shows it with three significant digits, not as 0.000000 (which reads as free), and a
    real zero as 0.000000."""
    upgrade(ledger_url)
    cheap = dataclasses.replace(to_entry(1, ROWS[0]), cost_usd=D("0.00000004"))
    free = dataclasses.replace(to_entry(2, ROWS[1]), tier="free")  # a cache hit: $0
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, [cheap, free])
    finally:
        engine.dispose()
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--by", "tier", url=ledger_url, cwd=tmp_path
    )
    lines = {
        line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 2
    }
    assert "4.00e-08" in lines["cheap"]
    assert "0.000000" not in lines["cheap"].split("│")[4]  # the cost $ column
    assert lines["free"].split("│")[4].strip() == "0.000000"


def test_cli_table_shows_the_abandoned_rate_and_a_small_cost_per_million_tokens(
    ledger_url: str, tmp_path: Path
) -> None:
    """The table has every rate the JSON has, the abandoned one included (before, it had no
    such column: a stream cut short read as neither an error nor anything else), and a cost per
    1M tokens under a cent with the JSON's digits, not rounded to 3 places (0.0007497 read as
    0.001, a third off)."""
    upgrade(ledger_url)
    cheap = dataclasses.replace(
        to_entry(1, ROWS[0]), cost_usd=D("0.000000082468"), prompt_tokens=40, completion_tokens=10
    )
    left = dataclasses.replace(to_entry(2, ROWS[6]), cost_usd=D(0))  # r7: the client left
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, [cheap, left])
    finally:
        engine.dispose()
    totals = cli_json(ledger_url, tmp_path)["totals"]
    assert totals["abandoned_rate"] == 0.5
    assert totals["cost_per_1m_tokens_usd"] == 0.0007497  # 0.000000082468 / 110 tokens x 1M
    done = tiergate("report", "--since", SINCE, "--until", UNTIL, url=ledger_url, cwd=tmp_path)
    header = next(line for line in done.stdout.splitlines() if "requests" in line)
    total = next(line for line in done.stdout.splitlines() if "total" in line)
    cells = dict(
        zip(
            [h.strip() for h in header.split("┃")[1:-1]],
            [c.strip() for c in total.split("│")[1:-1]],
            strict=True,
        )
    )
    assert cells["abandoned"] == "50.0%"
    assert cells["$ / 1M tok"] == "0.0007497"


def test_every_format_says_its_currency_and_what_the_baseline_stands_for(
    ledger: str, tmp_path: Path
) -> None:
    """The JSON (CLI and admin API alike) and the table say the money is in USD and how the
    baseline was estimated: the same tokens at the baseline model's prices, the routed answer's
    length standing for the baseline's, which is never made (before, only the README said so);
    a window without a baseline says it has none."""
    result = cli_json(ledger, tmp_path)
    assert result["currency"] == "USD"
    assert "baseline model's prices" in result["baseline_basis"]
    assert "routed answer's stands for it" in result["baseline_basis"]
    done = tiergate("report", "--since", SINCE, "--until", UNTIL, url=ledger, cwd=tmp_path)
    assert "Money in USD. Baseline: each request's own prompt and completion tokens" in " ".join(
        done.stdout.split()
    )
    empty = cli_json(ledger, tmp_path, "--since", "2026-11-23", "--until", "2026-11-24")
    assert empty["baseline_basis"] is None
    done = tiergate(
        "report", "--since", "2026-11-23", "--until", "2026-11-24", url=ledger, cwd=tmp_path
    )
    assert "No baseline: no request in the window has a baseline cost" in " ".join(
        done.stdout.split()
    )


def test_cli_format_is_read_in_any_case(ledger: str, tmp_path: Path) -> None:
    """``--format CSV`` and ``--format JSON`` are the CSV and the JSON (before: "'CSV': use
    table, json or csv", exit 2, though the option is meant to be case-insensitive)."""
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--format", "CSV", url=ledger, cwd=tmp_path
    )
    assert tuple(next(csv.reader(io.StringIO(done.stdout)))) == CSV_FIELDS
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--format", "JSON", url=ledger, cwd=tmp_path
    )
    assert json.loads(done.stdout)["totals"] == TOTALS


def test_cli_rejects_an_unknown_grouping(ledger: str, tmp_path: Path) -> None:
    """``--by`` with an unknown column is a usage error naming the choices."""
    done = tiergate("report", "--by", "colour", url=ledger, cwd=tmp_path, code=2)
    assert "tier" in done.stderr
    assert "day" in done.stderr


@pytest.mark.parametrize(
    ("args", "option", "says"),
    [
        (("--since", "last week"), "--since", "7d, 12h, 30m or an ISO date"),
        (("--until", "2026-13-01"), "--until", "7d, 12h, 30m or an ISO date"),
        (("--format", "xml"), "--format", "table, json or csv"),
        (("--by", "colour"), "--by", "tier, route, backend"),
        (("--since", UNTIL, "--until", SINCE), "--until", "is not after --since"),
        (("--since", SINCE, "--until", SINCE), "--until", "is not after --since"),
    ],
)
def test_cli_argument_mistakes_are_one_line_naming_the_option(
    ledger: str, tmp_path: Path, args: tuple[str, ...], option: str, says: str
) -> None:
    """A mistake in the arguments is one line on stderr naming the option, exit code 2, and no
    report (before: a boxed usage message that did not say which of --since and --until was
    wrong; a window ending before it starts printed an empty report, read as "no traffic")."""
    done = tiergate("report", *args, url=ledger, cwd=tmp_path, code=2)
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {option}: ")
    assert says in line
    assert done.stdout == ""


def test_cli_rejects_an_unknown_team(ledger: str, tmp_path: Path) -> None:
    """``--team`` with a team no key or request has is a one-line error (exit 2) saying how to
    list the teams, not an empty report that reads like a team that spent nothing. (This ledger
    has no team at all; tests/governance/test_keys_cli.py lists known ones.)"""
    done = tiergate("report", "--team", "team-a", url=ledger, cwd=tmp_path, code=2)
    [line] = done.stderr.splitlines()
    assert line.startswith("error: --team: no team 'team-a' in the ledger")
    assert "no team has a key or a request yet" in line
    assert "tiergate keys teams" in line
    assert done.stdout == ""


# --- the admin API ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", [None, "tier", "day", "key"])
async def test_admin_api_returns_the_cli_figures(
    ledger: str, tmp_path: Path, by: str | None
) -> None:
    """``GET /admin/report`` answers exactly what ``tiergate report --format json`` prints for
    the same ledger and window."""
    extra = ("--by", by) if by else ()
    from_cli = cli_json(ledger, tmp_path, *extra)
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    params = {"since": SINCE, "until": UNTIL, **({"by": by} if by else {})}
    async with gateway(policy, database_url=SecretStr(ledger)) as (client, _):
        response = await client.get("/admin/report", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == from_cli


async def test_admin_api_refuses_a_window_that_ends_before_it_starts(
    ledger: str, tmp_path: Path
) -> None:
    """``until`` not after ``since`` is a 400 naming ``until``, not an empty report."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy, database_url=SecretStr(ledger)) as (client, _):
        response = await client.get("/admin/report", params={"since": UNTIL, "until": SINCE})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "until"
    assert "is not after since" in error["message"]


async def test_admin_api_refuses_an_unknown_team(ledger: str, tmp_path: Path) -> None:
    """``team`` naming no team of the ledger is a 404 naming ``team`` (as ``tiergate report
    --team`` is an error), not an empty report that reads like a team that spent nothing."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy, database_url=SecretStr(ledger)) as (client, _):
        response = await client.get("/admin/report", params={"since": SINCE, "team": "team-x"})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("team", "team_not_found")
    assert "no team 'team-x'" in error["message"]


async def test_without_a_baseline_cost_is_still_summed(ledger_url: str) -> None:
    """Rows with a cost but no baseline (a policy without one) count in the cost; baseline and
    savings are unknown (None), not $0."""
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    try:
        insert_batch(
            engine,
            [
                dataclasses.replace(to_entry(i + 1, row), baseline_cost_usd=None)
                for i, row in enumerate(ROWS[:2])
            ],
        )
        report = build_report(engine, since=parse_since(SINCE), until=parse_since(UNTIL))
    finally:
        engine.dispose()
    totals = report["totals"]
    # r1 .0001 + r2 0 (a cache hit) = 0.0001 over 300 + 150 tokens
    assert totals["cost_usd"] == 0.0001
    assert totals["priced_requests"] == 2
    assert totals["compared_requests"] == 0
    assert totals["baseline_cost_usd"] is None
    assert totals["savings_usd"] is None
    assert totals["savings_pct"] is None


async def test_a_retry_on_the_same_backend_is_no_fallback(ledger_url: str) -> None:
    """A row whose chain names only its own backend ("local>local": retried after a 429 or a
    5xx) needed two attempts but no fallback; "local>remote" is one."""
    upgrade(ledger_url)
    plain, fallback = to_entry(1, ROWS[0]), to_entry(4, ROWS[3])
    retried = dataclasses.replace(
        to_entry(2, ROWS[0]), attempts=3, fallback_chain="local>local>local"
    )
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, [plain, retried, fallback])
        report = build_report(engine, since=parse_since(SINCE), until=parse_since(UNTIL))
    finally:
        engine.dispose()
    assert report["totals"]["fallback_rate"] == round(1 / 3, 4)


async def test_money_keeps_every_decimal_the_ledger_has(ledger_url: str, tmp_path: Path) -> None:
    """A tiny model's request costs a few 1e-8 USD, kept in the ledger to 12 decimals: the JSON
    (function, CLI) and CSV report carry those digits, not a figure rounded to 8 places (4e-08,
    off by 3 %), and a cost per 1M tokens that small keeps 4 significant digits, not 0.0."""
    upgrade(ledger_url)
    cheap = dataclasses.replace(
        to_entry(1, ROWS[0]),
        cost_usd=D("0.000000041234"),
        baseline_cost_usd=D("0.000000123457"),
        prompt_tokens=20,
        completion_tokens=5,
    )
    other = dataclasses.replace(cheap, id="00000000-0000-7000-8000-000000000002")
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, [cheap, other])
    finally:
        engine.dispose()
    totals = report(ledger_url)["totals"]
    assert totals["cost_usd"] == 0.000000082468
    assert totals["baseline_cost_usd"] == 0.000000246914
    assert totals["savings_usd"] == 0.000000164446
    # 0.000000082468 / 50 tokens x 1M = 0.00164936
    assert totals["cost_per_1m_tokens_usd"] == 0.001649
    assert cli_json(ledger_url, tmp_path)["totals"]["cost_usd"] == 0.000000082468
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--format", "csv",
        url=ledger_url, cwd=tmp_path,
    )  # fmt: skip
    (total,) = csv.DictReader(io.StringIO(done.stdout))
    assert D(total["cost_usd"]) == D("0.000000082468")


def test_every_format_names_the_baseline_models_the_window_was_priced_at(
    ledger_url: str, tmp_path: Path
) -> None:
    """A window spanning a policy change names each baseline model its rows were priced at,
    with how many of the rows the baseline figures sum (client rows with a cost and a baseline;
    the unpriced r6 is not one), and rows from before the ledger kept the model as such: in the
    JSON (``build_report``, so the admin API and the dashboard too) and on the table."""
    upgrade(ledger_url)
    named = []
    for i, row in enumerate(ROWS, start=1):
        model = "openai/gpt-4o" if row[0] == 20 else "anthropic/claude-sonnet-4"
        named.append(
            dataclasses.replace(to_entry(i, row), baseline_model=None if i == 12 else model)
        )
    engine = make_engine(ledger_url)
    try:
        insert_batch(engine, named)
    finally:
        engine.dispose()
    expected = [
        {"model": "openai/gpt-4o", "requests": 6},  # r1-r5, r7
        {"model": "anthropic/claude-sonnet-4", "requests": 4},  # r8-r11
        {"model": None, "requests": 1},  # r12
    ]
    assert report(ledger_url)["baselines"] == expected
    assert cli_json(ledger_url, tmp_path, "--by", "tier")["baselines"] == expected
    done = tiergate("report", "--since", SINCE, "--until", UNTIL, url=ledger_url, cwd=tmp_path)
    assert (
        "Baseline model: openai/gpt-4o (6 requests); anthropic/claude-sonnet-4 (4 requests); "
        "not recorded (rows from before revision 0013, or failed with no baseline) (1 request)."
    ) in " ".join(done.stdout.split())
    done = tiergate(
        "report", "--since", SINCE, "--until", UNTIL, "--by", "tier", "--format", "csv",
        url=ledger_url, cwd=tmp_path,
    )  # fmt: skip
    lines = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [line["key"] for line in lines] == ["cheap", "mid", "strong", "total"]
    for line in lines:
        assert line["currency"] == "USD"
        assert line["baseline_basis"] == BASELINE_BASIS
        assert line["baselines"] == (
            "openai/gpt-4o (6 requests); anthropic/claude-sonnet-4 (4 requests); not recorded "
            "(rows from before revision 0013, or failed with no baseline) (1 request)"
        )
    empty = report(ledger_url, since="2026-11-23", until="2026-11-24")
    assert empty["baselines"] == []
    done = tiergate(
        "report", "--since", "2026-11-23", "--until", "2026-11-24", "--format", "csv",
        url=ledger_url, cwd=tmp_path,
    )  # fmt: skip
    (total,) = csv.DictReader(io.StringIO(done.stdout))
    assert (total["key"], total["requests"], total["currency"]) == ("total", "0", "USD")
    assert (total["baselines"], total["baseline_basis"]) == ("", "")

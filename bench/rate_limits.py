"""Rate limits' cost on the request path: ``RateLimiter.admit`` at concurrency 1 (target: keys,
budget and rate-limit checks together ≤ 0.2 ms p50), for a request counted against a key and
its team, each with a requests and a tokens limit (2 subjects × 2 limits).

Timed, each call with ``perf_counter_ns`` after a warm-up, one call at a time on one event loop,
the variants interleaved (one call of each in turn) so that they share the machine's load:

* ``memory``: no Redis configured, ``limits``' in-process sliding-window counters;
* ``redis``: the Redis windows, one Lua script call per admission;
* ``redis_settle``: ``settle`` after a request used more tokens than estimated (one call);
* ``limits_redis_hit_only``: for comparison, ``limits``' own Redis storage (redis-py) with its
  ``SlidingWindowCounterRateLimiter``, one ``hit`` per limit (4 scripts, no all-or-nothing, no
  header numbers);
* ``limits_redis_full``: the same doing what ``admit`` does: ``test`` each limit, then ``hit``
  each, then ``get_window_stats`` each (12 round trips); these two get a fifth of the calls,
  interleaved with each other;
* ``redis_ping``: one bare Redis round trip on the same client, the floor.

The limits are high enough that nothing is refused. Keys go under a prefix of the run's own,
deleted afterwards.

Run:  python bench/rate_limits.py [--calls 5000] [--redis redis://127.0.0.1:6379/0]
      [--out bench/results/rate-limits.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio as aredis
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gateway.governance.rates import Limits, RateLimiter, Subject

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = [
    Subject("key", "bench-key", Limits(rpm=10**9, tpm=10**12)),
    Subject("team", "bench-team", Limits(rpm=10**9, tpm=10**12)),
]
TOKENS = 700  # prompt + max_tokens of a modest chat request


def summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {
        "calls": len(ordered),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "mean_us": round(statistics.fmean(ordered) / 1000, 1),
    }


async def timed(
    calls_by_name: dict[str, Callable[[], Awaitable[object]]], calls: int
) -> dict[str, dict[str, float]]:
    """Each variant ``calls`` times, interleaved (one call of each in turn), so that all of them
    see the same load on a shared machine."""
    for _ in range(min(500, calls)):
        for call in calls_by_name.values():
            await call()
    samples: dict[str, list[int]] = {name: [] for name in calls_by_name}
    for _ in range(calls):
        for name, call in calls_by_name.items():
            start = time.perf_counter_ns()
            await call()
            samples[name].append(time.perf_counter_ns() - start)
    return {name: summary(values) for name, values in samples.items()}


async def run(url: str, calls: int, prefix: str) -> dict[str, dict[str, float]]:
    memory = RateLimiter(None, prefix=prefix)
    shared = RateLimiter(url, prefix=prefix, timeout_s=1.0)
    client = aredis.Redis.from_url(url)
    storage = RedisStorage("async+" + url, implementation="redispy", key_prefix=prefix + "limits")
    limiter = SlidingWindowCounterRateLimiter(storage)
    items = [
        (RateLimitItemPerMinute(10**9), 1, "k", "r"),
        (RateLimitItemPerMinute(10**12), TOKENS, "k", "t"),
        (RateLimitItemPerMinute(10**9), 1, "t", "r"),
        (RateLimitItemPerMinute(10**12), TOKENS, "t", "t"),
    ]

    async def hit_only() -> None:
        for item, cost, *ids in items:
            await limiter.hit(item, *ids, cost=cost)

    async def full() -> None:
        if all([await limiter.test(item, *ids, cost=cost) for item, cost, *ids in items]):
            for item, cost, *ids in items:
                await limiter.hit(item, *ids, cost=cost)
        for item, _, *ids in items:
            await limiter.get_window_stats(item, *ids)

    results = await timed(
        {
            "memory": lambda: memory.admit(SUBJECTS, TOKENS),
            "redis": lambda: shared.admit(SUBJECTS, TOKENS),
            "redis_settle": lambda: shared.settle(SUBJECTS, TOKENS, TOKENS + 5),
            "redis_ping": client.ping,
        },
        calls,
    )
    assert shared.state()[0] == "ok", shared.state()
    results |= await timed(
        {"limits_redis_hit_only": hit_only, "limits_redis_full": full}, max(500, calls // 5)
    )
    await memory.aclose()
    await shared.aclose()
    await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/rate-limits.json")
    args = parser.parse_args()
    prefix = f"tiergate:rl:bench-{uuid.uuid4().hex}:"
    try:
        results = asyncio.run(run(args.redis, args.calls, prefix))
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    for name, numbers in results.items():
        print(f"{name:24} p50 {numbers['p50_us']:7.1f} us   p99 {numbers['p99_us']:7.1f} us")
    report = {
        "benchmark": "rate-limits",
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.machine(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "target": "keys + budget + rate-limit checks together <= 200 us p50 at concurrency 1",
        "request": "2 subjects (key, team) x 2 limits (rpm, tpm), 700 tokens estimated",
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()

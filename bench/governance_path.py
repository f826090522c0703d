"""Where a governed request's time goes at concurrency 1, in process: ``Governor.admit`` and
``release`` for the governance bench's key (a team and a key, each with a budget and rpm/tpm
limits far from reached), one request after another on uvloop, against a Redis.

Per request it reports (medians, µs): the gate's Python before the Redis call (the key's checks,
its budgets' periods, the options and their worst cases), the wait for the answer (the loop turn
the batch waits for, the round trip, the script, parsing), the Python after it (the headers),
the settlement, and the whole admission's wall and CPU time; Redis's own time per script call
(INFO commandstats) and a PING's round trip, for scale. ``--leases off`` turns the lease fast
path off (every admission asks Redis).

Run:  python bench/governance_path.py [--requests 5000] [--redis redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import uvloop

from gateway.governance import gate as gate_module
from gateway.governance.budgets import MemoryBudgets
from gateway.governance.gate import Governor
from gateway.governance.grants import Allowance, Grant
from gateway.governance.rates import RateLimiter
from gateway.governance.remote import RemoteGate
from gateway.policy import Candidate, Decision
from gateway.policy.load import load_policy

POLICY = """
version: 1
backends:
  upstream: {type: fake, model: m}
  spare: {type: fake, model: m}
tiers:
  - {name: local, max_score: 0.5, backends: [upstream]}
  - {name: remote, backends: [spare]}
pricing:
  backends:
    upstream: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.2}
    spare: {usd_per_1m_input: 1, usd_per_1m_output: 2}
"""


def grant() -> Grant:
    run = uuid.uuid4().hex[:8]
    roomy: dict[str, Any] = {
        "budget_usd": Decimal(1_000_000),
        "period": "day",
        "rpm": 10_000_000,
        "tpm": 10**12,
    }
    return Grant(
        f"vk-{run}",
        "bench",
        team="bench",
        key=Allowance("key", f"vk-{run}", **roomy),
        team_allowance=Allowance("team", f"t-{run}", **roomy),
        virtual=True,
    )


async def run(url: str, requests: int, leases: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(POLICY)
        policy = load_policy(path)
    try:
        remote = RemoteGate(url, leases=leases)  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # before the lease fast path
        remote = RemoteGate(url)
    governor = Governor(MemoryBudgets(), RateLimiter(None), None, remote=remote)
    who = grant()
    decision = Decision("auto", "remote", (Candidate("spare", "remote"),), False, ())
    stages: dict[str, list[float]] = {k: [] for k in ("pre", "wait", "post", "release")}
    walls: list[float] = []
    cpus: list[float] = []
    real_admit = remote.admit
    # the gate's fast path: ``admit_now`` (``admit_leased`` before it took the request's fields)
    fast = "admit_now" if hasattr(remote, "admit_now") else "admit_leased"
    real_local = getattr(remote, fast, None)
    marks: dict[str, float] = {}

    async def timed_admit(ask: Any) -> Any:
        marks["pre"] = time.perf_counter()
        answer = await real_admit(ask)
        marks["wait"] = time.perf_counter()
        return answer

    def timed_local(*args: Any) -> Any:
        marks["pre"] = time.perf_counter()
        answer = real_local(*args) if real_local is not None else None
        marks["wait"] = time.perf_counter()
        return answer

    remote.admit = timed_admit  # type: ignore[method-assign]
    if real_local is not None:
        setattr(remote, fast, timed_local)
    for i in range(requests + 500):
        rid = f"r{i}"
        start, cpu = time.perf_counter(), time.process_time()
        admission = await governor.admit(
            who,
            policy,
            decision,
            rid=rid,
            prompt_tokens=12,
            max_tokens=64,
            fits=lambda _: True,
            deadline_s=60.0,
        )
        end = time.perf_counter()
        governor.release(who, admission, rid, Decimal("0.00001"), 40)
        done, cpu_done = time.perf_counter(), time.process_time()
        if i >= 500:  # warm-up
            stages["pre"].append(marks["pre"] - start)
            stages["wait"].append(marks["wait"] - marks["pre"])
            stages["post"].append(end - marks["wait"])
            stages["release"].append(done - end)
            walls.append(done - start)
            cpus.append(cpu_done - cpu)
        await asyncio.sleep(0)  # the loop turns once between requests, as in the gateway
    await governor.aclose()
    return {
        "median_us": {k: round(statistics.median(v) * 1e6, 1) for k, v in stages.items()},
        "admit_and_release_wall_us": round(statistics.median(walls) * 1e6, 1),
        "admit_and_release_cpu_us": round(statistics.mean(cpus) * 1e6, 1),
        "fast": getattr(remote, "leased_admissions", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--leases", choices=("on", "off"), default="on")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.config_resetstat()
    pings = []
    for _ in range(500):
        t = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - t)
    client.config_resetstat()
    result = uvloop.run(run(args.redis, args.requests, args.leases == "on"))
    stats = client.info("commandstats")
    script = stats.get("cmdstat_evalsha", {})
    result["redis_script_calls"] = script.get("calls", 0)
    result["redis_us_per_script_call"] = script.get("usec_per_call", 0)
    result["ping_rtt_us_median"] = round(statistics.median(pings) * 1e6, 1)
    result["hold_margin_s"] = gate_module.HOLD_MARGIN_S
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

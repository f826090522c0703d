"""What governance costs on the request path: the same gateway twice, in one run, their wrk
runs interleaved (a b, b a, ...), both with the ledger on (virtual keys live in its database)
and the same bearer token:

* ``bootstrap``: the token is a ``TIERGATE_API_KEYS`` key: authentication only, no limits;
* ``governed``: the token is a virtual key of a team, both with a budget and request and token
  rate limits (high enough never to refuse), held in Redis: the key book lookup, the rate-limit
  check, the worst-case budget reservation and its settlement after the answer.

Target (the governance issue): together they add at most 0.2 ms p50 at concurrency 1 and cost
at most 10% of requests/s at concurrency 32.

Run:  python bench/governance_overhead.py [--duration 10] [--rounds 5]
        [--redis redis://127.0.0.1:6379/14] [--out bench/results/governance-overhead.json]
Needs wrk on PATH (Debian: apt-get install wrk) and a Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_overhead import (
    BODY,
    POLICY,
    ROOT,
    TreeGateway,
    free_port,
    wait_http,
)

TOKEN = "tg-bench-0123456789abcdefghijklmnopqrstuvwxyz"
TARGET_P50_ADDED_MS = 0.2
TARGET_RPS_LOSS_PCT = 10.0


def script(directory: Path) -> Path:
    body = json.dumps(BODY).replace("'", "\\'")
    path = directory / "post-governed.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        f"wrk.body = '{body}'\n"
    )
    return path


def governed_database(url: str) -> None:
    """A ledger with one team and one key (the bench's token), both limited."""
    from sqlalchemy import update

    from gateway.governance import store
    from gateway.governance.store import LimitsIn
    from gateway.ledger.db import make_engine, upgrade
    from gateway.ledger.models import KeyRow

    upgrade(url)
    engine = make_engine(url)
    roomy = LimitsIn(budget_usd=Decimal(1_000_000), period="day", rpm=10_000_000, tpm=10**12)
    store.put_team(engine, "bench", roomy)
    made = store.create_key(engine, "bench", roomy, team="bench")
    with engine.begin() as conn:  # the bench's fixed token, so wrk sends one header to both
        conn.execute(update(KeyRow).where(KeyRow.id == made.id).values(digest=store.digest(TOKEN)))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/governance-overhead.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tiergate-gov-bench-"))
    mock_port = free_port()
    (work / "policy.yaml").write_text(POLICY.format(port=mock_port))
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    governed_url = f"sqlite:///{work / 'governed.db'}"
    governed_database(governed_url)
    common = {"TIERGATE_LEDGER": "true", "TIERGATE_REDIS_URL": args.redis}
    envs = {
        "bootstrap": {
            **common,
            "TIERGATE_API_KEYS": f"bench:{TOKEN}",
            "TIERGATE_DATABASE_URL": f"sqlite:///{work / 'bootstrap.db'}",
            "TIERGATE_OUTBOX_PATH": str(work / "bootstrap-outbox.db"),
        },
        "governed": {
            **common,
            "TIERGATE_ADMIN_KEY": "bench-admin-key-0123456789",
            "TIERGATE_DATABASE_URL": governed_url,
            "TIERGATE_OUTBOX_PATH": str(work / "governed-outbox.db"),
        },
    }
    wrk = script(work)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    gateways: list[TreeGateway] = []
    try:
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock)
        for label, env in envs.items():
            gateways.append(TreeGateway(ROOT, work, label, env))
        for gateway in gateways:
            wait_http(f"http://127.0.0.1:{gateway.port}/healthz", gateway.process)
            probe = httpx.post(
                gateway.url, json=BODY, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            if probe.status_code != 200:
                raise RuntimeError(f"{gateway.label} answered {probe.status_code}: see {work}")
        for c in (1, 32):
            load = f"json/c{c}"
            for gateway in gateways:
                gateway.wrk(wrk, c, 2)
            for turn in range(args.rounds):
                for gateway in gateways if turn % 2 == 0 else gateways[::-1]:
                    run = gateway.wrk(wrk, c, args.duration)
                    runs.setdefault(load, {}).setdefault(gateway.label, []).append(run)
                    print(f"{load}/{gateway.label}", json.dumps(run), flush=True)
    finally:
        for gateway in gateways:
            gateway.stop()
        mock.terminate()
        mock.wait(timeout=30)
    summary: dict[str, Any] = {}
    for load, by_label in runs.items():
        base, gov = by_label["bootstrap"], by_label["governed"]
        summary[load] = {
            "p50_ms": {
                "bootstrap": statistics.median(r["p50_ms"] for r in base),
                "governed": statistics.median(r["p50_ms"] for r in gov),
            },
            "rps": {
                "bootstrap": statistics.median(r["rps"] for r in base),
                "governed": statistics.median(r["rps"] for r in gov),
            },
            "paired_p50_added_ms": round(
                statistics.median(
                    g["p50_ms"] - b["p50_ms"] for b, g in zip(base, gov, strict=True)
                ),
                3,
            ),
            "paired_rps_change_pct": round(
                (statistics.median(g["rps"] / b["rps"] for b, g in zip(base, gov, strict=True)) - 1)
                * 100,
                2,
            ),
            "non_2xx": sum(r["non_2xx"] for r in base + gov),
        }
    verdict = {
        "p50_added_ms_c1": summary["json/c1"]["paired_p50_added_ms"] <= TARGET_P50_ADDED_MS,
        "rps_loss_pct_c32": -summary["json/c32"]["paired_rps_change_pct"] <= TARGET_RPS_LOSS_PCT,
    }
    report = {
        "benchmark": "governance overhead: bootstrap key vs virtual key with budget + rate limits",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "duration_s": args.duration,
        "rounds": args.rounds,
        "targets": {
            "p50_added_ms_c1": TARGET_P50_ADDED_MS,
            "rps_loss_pct_c32": TARGET_RPS_LOSS_PCT,
        },
        "summary": summary,
        "meets_targets": verdict,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": summary, "meets_targets": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

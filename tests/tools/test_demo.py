"""``tiergate demo``: the installed command run against a real ``tiergate serve`` (fake backends
only, so it takes seconds), and what it leaves in the ledger and prints from the report."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.base import Timings, Usage
from gateway.ledger.db import make_engine
from gateway.ledger.models import RequestRow
from gateway.policy import load_policy
from gateway.policy.pricing import litellm_price
from gateway.tools.demo import client_key
from gateway.tools.demo_workload import KINDS, LARGE_MAX_TOKENS, PROMPTS, Target, plan_requests
from tests.http.live_server import ADMIN_KEY, API_KEY, Server

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0

# Three tiers of fakes, priced (a fake is otherwise unpriced), and the routes of the default
# policy, so the demo's seeded workload reaches every tier, route and pinned backend.
POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "a short answer from small"}]}
  medium:
    type: fake
    model: medium-model
    script: [{reply: "a somewhat longer answer from the medium backend"}]
  large:
    type: fake
    model: large-model
    tokens_per_second: 500
    script: [{reply: "a long and careful answer from the large backend, step by step"}]
tiers:
  - {name: tiny, max_score: 0.2, backends: [small]}
  - {name: local, max_score: 0.5, backends: [medium]}
  - {name: remote, backends: [large]}
routes:
  auto: {}
  cheap: {tiers: [tiny, local]}
  best: {tier: remote}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    small: {hardware: {usd_per_hour: 0.05, watts: 65, usd_per_kwh: 0.15}}
    medium: {usd_per_1m_input: 0.05, usd_per_1m_output: 0.2}
    large: {usd_per_1m_input: 0.15, usd_per_1m_output: 0.6}
"""
BACKEND_TIER = {"small": "tiny", "medium": "local", "large": "remote"}


def _demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``tiergate demo``, without any TIERGATE_* setting but ``env``."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from gateway.cli.main import main; main()"]
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    return subprocess.run(
        [*command, "demo", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def _usd(value: Decimal) -> str:
    """How the report (rounded to 8 places) and then the demo (6 places) print money."""
    return f"${float(round(value, 8)):.6f}"


def test_demo_fills_the_ledger_across_tiers(tmp_path: Path, serve: Callable[..., Server]) -> None:
    """The demo's requests all land in the ledger, one row each, spread over every tier, route
    kind and both modes, and the report it prints agrees with those rows."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = serve(policy, watch=False)
    n = 24

    done = _demo(
        "--url",
        server.base_url,
        "--admin-key",
        ADMIN_KEY,
        "--requests",
        str(n),
        "--concurrency",
        "4",
        TIERGATE_API_KEYS=f"tests:{API_KEY}",  # the client key, as the server's setting has it
    )
    server.stop()  # drains the ledger writer

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{n}/{n} answered" in out
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with Session(engine) as session:
            rows = session.scalars(select(RequestRow)).all()
    finally:
        engine.dispose()
    assert len(rows) == n
    assert len({r.id for r in rows}) == n
    assert {r.key_id for r in rows} == {"tests"}
    assert {r.status for r in rows} == {200}
    tiers = Counter(r.tier for r in rows)
    assert set(tiers) == set(BACKEND_TIER.values())
    assert all(BACKEND_TIER[r.backend] == r.tier for r in rows)
    assert {r.route for r in rows} >= {"auto", *BACKEND_TIER}  # scored, and pinned to each
    assert {r.stream for r in rows} == {True, False}
    # The printed report (GET /admin/report by tier) has the ledger's counts and money.
    assert "report (GET /admin/report" in out
    for tier, count in tiers.items():
        assert f"\n  {tier:<10} {count:>8} " in out, out
    assert f"\n  {'total':<10} {n:>8} " in out, out
    cost = sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
    baseline = sum((r.baseline_cost_usd for r in rows if r.baseline_cost_usd), Decimal(0))
    assert all(r.cost_usd is not None and r.baseline_cost_usd is not None for r in rows)
    assert f"saved {_usd(baseline - cost)} of {_usd(baseline)}" in out, out
    assert f"dashboard: {server.base_url}/dashboard" in out


def test_demo_without_the_admin_key_says_the_report_needs_it(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """Without the admin key the requests still go through, and the demo says plainly why it
    shows no report instead of failing."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = serve(policy, watch=False)

    done = _demo("--url", server.base_url, "--key", API_KEY, "--requests", "3")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 answered" in done.stdout
    assert "the admin key was not given" in done.stdout
    assert "--admin-key" in done.stdout
    assert "report (GET /admin/report" not in done.stdout


def test_demo_without_a_gateway_fails_clearly() -> None:
    """With nothing listening at --url the demo exits with 2 and says how to start one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once the socket closes: nothing listens there

    done = _demo("--url", f"http://127.0.0.1:{port}", "--requests", "2")

    assert done.returncode == 2
    assert f"no gateway answers at http://127.0.0.1:{port}" in done.stdout
    assert "make serve" in done.stdout


def test_workload_is_seeded_and_mixed() -> None:
    """The same seed plans the same requests; a plan of 30 has every kind of prompt, streams
    and non-streams, every usable backend pinned, other routes, and large max_tokens."""
    target = Target("auto", ("cheap", "best"), ("tiny", "local", "remote"))

    plan = plan_requests(30, 7, target)

    assert plan == plan_requests(30, 7, target)
    assert plan != plan_requests(30, 8, target)
    assert {r.prompt.kind for r in plan} == set(KINDS)
    assert {r.prompt for r in plan} == set(PROMPTS)  # every prompt before any repeats
    assert {r.stream for r in plan} == {True, False}
    models = Counter(r.model for r in plan)
    assert set(models) >= {"auto", "cheap", "best", "tiny", "local", "remote"}
    assert models["auto"] > len(plan) // 2
    large = [r for r in plan if r.max_tokens == LARGE_MAX_TOKENS]
    assert large
    assert all(r.prompt.short_answer for r in large)


def test_workload_pins_only_backends_that_are_usable() -> None:
    """With one usable backend and no other route, pinned requests all name that backend."""
    plan = plan_requests(40, 3, Target("auto", (), ("tiny",)))

    assert {r.model for r in plan} == {"auto", "tiny"}


def test_demo_policy_prices_every_tier_against_gpt_4o() -> None:
    """policies/demo.yaml has the real tiny model and two simulated (fake) tiers, every backend
    priced (none left "unpriced"), the remote one like gpt-4o-mini, against GPT-4o."""
    policy = load_policy(REPO / "policies" / "demo.yaml")
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    timings = Timings(latency_ms=1000.0, server_ms=1000.0)
    mini, gpt_4o = litellm_price("openai/gpt-4o-mini"), litellm_price("openai/gpt-4o")
    assert mini is not None
    assert gpt_4o is not None

    assert [t.name for t in policy.tiers] == ["tiny", "local", "remote"]
    assert {name: c.type for name, c in policy.backends.items()} == {
        "tiny": "tiny",
        "local": "fake",
        "remote": "fake",
    }
    assert policy.prices.unpriced() == []
    priced = {name: policy.prices.price(name, usage, timings) for name in policy.backends}
    assert {p.source for p in priced.values()} == {"hardware", "policy"}
    assert priced["remote"].cost == mini.cost(usage)
    assert all(p.baseline == gpt_4o.cost(usage) for p in priced.values())
    assert all(
        p.cost is not None and p.baseline is not None and p.cost < p.baseline
        for p in priced.values()
    )


def test_client_key_reads_the_api_keys_setting_format() -> None:
    """``--key`` takes a key as TIERGATE_API_KEYS writes it: bare, ``id:key``, or a list."""
    assert client_key("sk-plain") == "sk-plain"
    assert client_key("team-a:sk-abc") == "sk-abc"
    assert client_key(" team-a:sk-abc , team-b:sk-def") == "sk-abc"
    assert client_key("") is None
    assert client_key(None) is None

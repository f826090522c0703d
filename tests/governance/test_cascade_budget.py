"""A cascading tier under a budget: its hold counts the escalation it may make (both calls are
billed), and when the budget has room for the cheap call only, the cascade does not escalate:
the unsure answer stands rather than spend what was never reserved."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.governance import store
from gateway.governance.budgets import to_nano
from gateway.governance.options import Worst, options
from gateway.governance.store import LimitsIn
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.policy import Candidate, Decision, Policy, load_policy
from tests.http.helpers import gateway
from tests.routing.test_cascade import POLICY as CASCADING
from tests.support.redis import PrivateRedis

# tests/routing/test_cascade.py's policy: every cheap answer here is unsure (mean log-prob -2.5
# → confidence 0.125 < 0.5), so it escalates whenever it may.


def write_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(CASCADING.replace("STREAMED", "buffer"))
    return path


def test_a_cascading_tier_is_offered_with_its_escalation_then_without(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path))
    worst = Worst(policy.prices, prompt_tokens=100, max_tokens=50, busy_s=60.0)
    decision = Decision("auto", "cheap", (Candidate("small", "cheap"),), False, ())
    first, second = options(policy, decision, worst, lambda _b: True, step_down=True)
    small = to_nano(worst.of("small"), up=True)
    big = to_nano(worst.of("big"), up=True)
    assert (first.decision, first.amount, first.may_escalate) == (decision, small + big, True)
    assert (second.decision, second.amount, second.may_escalate) == (decision, small, False)
    # The strong tier has no cascade: offered once, escalation not in question.
    strong = Decision("auto", "strong", (Candidate("big", "strong"),), False, ())
    (only,) = options(policy, strong, worst, lambda _b: True, step_down=False)
    assert (only.amount, only.may_escalate) == (big, True)


async def test_escalations_stop_when_the_budget_cannot_cover_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    budget = Decimal("0.002")
    made = store.create_key(engine, "app", LimitsIn(budget_usd=budget, period="day"))
    backends = {
        "small": FakeBackend.scripted(
            "small", FakeStep(reply="small answer", logprobs=(-2.5,)), model="small-model"
        ),
        "big": FakeBackend.scripted("big", "big answer", model="big-model"),
    }
    body = {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    verdicts: list[str] = []
    big_calls: list[int] = []
    async with gateway(write_policy(tmp_path), backends=backends, database_url=url) as (
        client,
        app,
    ):
        for _ in range(400):
            response = await client.post(
                "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {made.key}"},
            )
            if response.status_code != 200:
                break
            verdicts.append(response.headers["x-tiergate-cascade"])
            big_calls.append(len(backends["big"].requests))
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "budget_exceeded"
        await app.state.ledger.flush()
    # Escalated while both calls fit, then the unsure answer stood, then refused; never back.
    first_unescalated = verdicts.index("unescalated")
    assert first_unescalated > 0
    assert set(verdicts[:first_unescalated]) == {"escalated"}
    assert set(verdicts[first_unescalated:]) == {"unescalated"}
    # Once escalation stopped, the strong backend was never called again.
    assert big_calls[first_unescalated:] == [big_calls[first_unescalated - 1]] * (
        len(verdicts) - first_unescalated
    )
    with engine.connect() as connection:
        spent = connection.execute(select(func.sum(RequestRow.cost_usd))).scalar_one()
        rows = connection.execute(
            select(RequestRow.cascade, func.count()).group_by(RequestRow.cascade)
        ).all()
    assert spent is not None
    assert spent <= budget
    assert dict(rows) == {
        "escalated": first_unescalated,
        "unescalated": len(verdicts) - first_unescalated,
    }


async def test_the_lease_fast_path_holds_what_the_first_option_would(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Far from the budget, a request is admitted from the replica's leases with the worst
    case ``options`` puts first: the escalation counted in for the cascading tier, not for the
    other; remembered per policy, so new prices give new worst cases."""
    from gateway.governance.budgets import MemoryBudgets
    from gateway.governance.gate import Governor
    from gateway.governance.grants import Allowance, Grant
    from gateway.governance.rates import RateLimiter
    from gateway.governance.remote import RemoteGate

    path = write_policy(tmp_path)
    policy = load_policy(path)
    dearer = load_policy(_priced(path, tmp_path, "dearer.yaml"))
    roomy = Allowance("key", "k-fast", budget_usd=Decimal(1000), period="day", rpm=1_000_000)
    grant = Grant("k-fast", "app", key=roomy, virtual=True)
    governor = Governor(
        MemoryBudgets(), RateLimiter(None), None, remote=RemoteGate(private_redis.url())
    )
    cheap = Decision("auto", "cheap", (Candidate("small", "cheap"),), False, ())
    strong = Decision("auto", "strong", (Candidate("big", "strong"),), False, ())
    sizes = (100, 50)

    def first(of: Policy, decision: Decision) -> int:
        worst = Worst(of.prices, *sizes, busy_s=30.0)
        return options(of, decision, worst, lambda _b: True, step_down=True)[0].amount

    try:
        # The first request is decided in Redis and opens the leases; the rest need no call.
        await governor.decide(grant, policy, cheap, "r0", sizes, lambda _b: True, 30.0)
        await governor.remote.flush()  # type: ignore[union-attr]
        admitted = []
        for i, (of, decision) in enumerate(
            [(policy, cheap), (policy, strong), (policy, cheap), (dearer, cheap), (dearer, strong)]
        ):
            now = governor.admit_now(grant, of, decision, f"r{i + 1}", sizes, lambda _b: True, 30.0)
            assert now is not None
            assert now.shared  # from the leases, no call
            admitted.append((now.reserved, first(of, decision)))
        assert all(held == expected for held, expected in admitted)
        cascading, plain = admitted[0][0], admitted[1][0]
        assert cascading > plain  # the cascading tier holds its own call and the escalation's
        assert admitted[2][0] == cascading
        assert admitted[3][0] > cascading  # new prices, new worst cases
        assert admitted[4][0] > plain
    finally:
        await governor.aclose()


def _priced(path: Path, tmp_path: Path, name: str) -> Path:
    dearer = tmp_path / name
    dearer.write_text(
        path.read_text()
        .replace("usd_per_1m_input: 1,", "usd_per_1m_input: 3,")
        .replace("usd_per_1m_input: 10,", "usd_per_1m_input: 30,")
    )
    return dearer

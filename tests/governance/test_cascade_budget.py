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
from gateway.policy import Candidate, Decision, load_policy
from tests.http.helpers import gateway
from tests.routing.test_cascade import POLICY as CASCADING

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

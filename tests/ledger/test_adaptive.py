"""The adaptive scorer on a real ledger database (SQLite file and PostgreSQL): requests routed
to the cheaper tier keep their embedding (never their text), feedback turns them into labels,
and a second replica on the same database learns the same thing and routes the same way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

import pytest
from sqlalchemy import Engine, func, select, text

from adapters.base import ChatRequest, Message
from gateway.cache.service import CacheService
from gateway.cache.store import MemoryStore
from gateway.canary.controller import CanaryController
from gateway.canary.counters import CanaryMetrics
from gateway.governance.grants import Grant
from gateway.ledger.adaptive import JUDGE, insert_label
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.feedback import Feedback, insert_feedback
from gateway.ledger.models import AdaptiveLabelRow, AdaptiveSampleRow
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.pipeline import Answer, Inbound, Pipeline
from gateway.routing.accounting import Accountant, Outcome
from gateway.routing.attempts import Attempt, Trace
from gateway.routing.plan import Plan, make_plan
from gateway.routing.runtime import Runtime
from gateway.scoring.adaptive import owner_scope
from tests.support.topics import BAKING, NETWORKING, prompts

POLICY = """
version: 1
backends:
  weak: {{type: fake}}
  strong: {{type: fake}}
tiers:
  - {{name: weak, max_score: 0.5, backends: [weak]}}
  - {{name: strong, backends: [strong]}}
scorer: {{kind: adaptive, base: v1, store_embeddings: {store}{extra}}}
"""
MARKER = "zq-marker-5e2b"  # looked for in every stored column


@dataclass
class Replica:
    runtime: Runtime
    writer: LedgerWriter
    accountant: Accountant

    def plan(
        self, messages: tuple[Message, ...], key_id: str = "k", team: str | None = None
    ) -> Plan:
        active = self.runtime.active
        return make_plan(
            active.policy,
            active.pool.capabilities,
            ChatRequest(messages=messages),
            None,
            adaptive=active.adaptive,
            owner=owner_scope(key_id, team),
        )

    def answer(
        self,
        messages: tuple[Message, ...],
        tier: str = "weak",
        key_id: str = "k",
        team: str | None = None,
    ) -> str:
        """Plan a request of ``key_id`` (of ``team``) and account for it as answered by
        ``tier``; its request id."""
        plan = self.plan(messages, key_id, team)
        outcome = Outcome(
            rid=str(uuid.uuid4()),
            ts=datetime.now(UTC),
            started=0.0,
            key_id=key_id,
            policy_hash=self.runtime.active.policy.hash,
            stream=False,
            route="auto",
            tier=tier,
            backend=tier,
            model="m",
            trace=Trace(attempts=[Attempt(tier, tier, None, None, 1.0)]),
            team=team,
        )
        self.accountant.finish(outcome, plan, self.runtime.active.policy.prices)
        return outcome.rid

    def score(
        self, messages: tuple[Message, ...], key_id: str = "k", team: str | None = None
    ) -> float:
        score = self.plan(messages, key_id, team).score
        assert score is not None
        return score.value


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


async def replica(url: str, policy: Path, tmp: Path) -> AsyncIterator[Replica]:
    metrics = Metrics()
    engine = make_engine(url)
    runtime = Runtime(policy, metrics)
    runtime.use_ledger(engine)
    writer = LedgerWriter(engine, Outbox(tmp / f"outbox-{uuid.uuid4().hex}.db"), metrics)
    writer.start()
    try:
        yield Replica(runtime, writer, Accountant(metrics, writer))
    finally:
        await writer.aclose()
        await runtime.aclose()


def policy_file(tmp_path: Path, *, store: bool, feedback: str | None = None) -> Path:
    path = tmp_path / f"adaptive-{store}-{feedback}.yaml"
    extra = f", feedback: {{scope: {feedback}}}" if feedback is not None else ""
    path.write_text(POLICY.format(store=str(store).lower(), extra=extra))
    return path


def rate(engine: Engine, request_id: str, score: float, key_id: str = "k") -> None:
    insert_feedback(
        engine, Feedback(str(uuid.uuid4()), request_id, datetime.now(UTC), key_id, score, None)
    )


def count(engine: Engine, table: type[AdaptiveSampleRow] | type[AdaptiveLabelRow]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


async def test_feedback_teaches_both_replicas_the_same_rule(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, store=True)
    async for a in replica(ledger_url, policy, tmp_path):
        async for b in replica(ledger_url, policy, tmp_path):
            # A fixed marker: a random one moves the training prompts' embeddings at random
            # (its hex digits are a dozen extra tokens), and with them the learned rule.
            marker = MARKER
            networking = prompts(NETWORKING, 25, seed=1)
            baking = prompts(BAKING, 25, seed=2)
            asked = [
                (Message(role="user", content=f"{m[0].content} {marker}"),)
                for m in [*networking, *baking]
            ]
            ids = [a.answer(m) for m in asked]
            a.answer(asked[0], tier="strong")  # the strongest tier's answers teach nothing
            await a.writer.flush()
            assert count(engine, AdaptiveSampleRow) == 50
            for position, request_id in enumerate(ids):  # networking answers were bad
                rate(engine, request_id, 0.0 if position < 25 else 1.0)
            assert count(engine, AdaptiveLabelRow) == 50

            held_out = [*prompts(NETWORKING, 10, seed=3), *prompts(BAKING, 10, seed=4)]
            before = [b.score(m) for m in held_out]
            assert await b.runtime.active.adaptive.refresh() == 50  # type: ignore[union-attr]
            assert await a.runtime.active.adaptive.refresh() == 50  # type: ignore[union-attr]
            after_b = [b.score(m) for m in held_out]
            after_a = [a.score(m) for m in held_out]
            assert after_a == after_b  # every replica routes the same way
            assert max(before[10:]) >= min(before[:10])  # v1 alone cannot tell them apart
            assert min(after_b[:10]) > max(after_b[10:])
            assert await b.runtime.active.adaptive.refresh() == 0  # type: ignore[union-attr]

            # Embeddings and numbers only: the prompts' text is in no column.
            for table in ("adaptive_samples", "adaptive_labels"):
                with engine.connect() as connection:
                    stored = connection.execute(text(f"SELECT * FROM {table}")).all()
                assert stored
                for row in stored:
                    for value in row:
                        raw = bytes(value) if isinstance(value, bytes | memoryview) else None
                        assert marker not in str(value)
                        assert raw is None or marker.encode() not in raw
                        assert raw is None or len(raw) == 512


@pytest.mark.parametrize("scope", [None, "shared"])
async def test_one_teams_feedback_moves_only_its_own_routing(
    engine: Engine, ledger_url: str, tmp_path: Path, scope: str | None
) -> None:
    """A hostile tenant rating its own prompts cannot steer another team's similar prompts to
    another tier (the default, ``feedback: {scope: team}``); with ``scope: shared`` every team
    learns from every rating. A judge's labels (the gateway's own) move everyone."""
    async for a in replica(ledger_url, policy_file(tmp_path, store=True, feedback=scope), tmp_path):
        layer = a.runtime.active.adaptive
        assert layer is not None
        asked = [
            (Message(role="user", content=f"{m[0].content} {MARKER}"),)
            for m in prompts(NETWORKING, 25, seed=1)
        ]
        ids = [a.answer(m, key_id="key-a", team="alpha") for m in asked]
        loner = a.answer(asked[0], key_id="key-solo")  # a key of no team
        await a.writer.flush()
        for request_id in ids:  # team alpha says every cheap answer was bad
            rate(engine, request_id, 0.0, key_id="key-a")
        rate(engine, loner, 0.0, key_id="key-solo")
        with engine.connect() as connection:
            owners = connection.execute(select(AdaptiveLabelRow.owner)).scalars().all()
        assert set(owners) == {"key:key-solo", "team:alpha"}

        similar = prompts(NETWORKING, 5, seed=9)
        tenants = {
            "alpha, another key": ("key-a2", "alpha"),
            "beta": ("key-b", "beta"),
            "no team": ("key-other", None),
        }
        before = {name: [a.score(m, *who) for m in similar] for name, who in tenants.items()}
        assert await layer.refresh() == 26
        after = {name: [a.score(m, *who) for m in similar] for name, who in tenants.items()}
        moved = {name: after[name] != before[name] for name in tenants}
        shared = scope == "shared"
        assert moved == {"alpha, another key": True, "beta": shared, "no team": shared}
        assert mean(after["alpha, another key"]) > mean(before["alpha, another key"]) + 0.2

        # The gateway's own verdicts are shared: a judge's labels move beta too.
        with engine.connect() as connection:
            embeddings = connection.execute(select(AdaptiveSampleRow.embedding)).scalars().all()
        for number, embedding in enumerate(embeddings):
            insert_label(engine, f"judged-{number}", datetime.now(UTC), JUDGE, 1.0, embedding)
        await layer.refresh()
        assert mean(a.score(m, "key-b", "beta") for m in similar) > mean(before["beta"]) + 0.2


async def test_through_the_gateway_each_team_is_routed_by_its_own_feedback(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    """The request path itself: the caller's key and team (virtual keys) decide whose feedback
    labels its score consults. Team alpha's ratings raise the score of alpha's next similar
    request, from another of its keys, and leave team beta's where it was."""
    metrics = Metrics()
    runtime = Runtime(policy_file(tmp_path, store=True), metrics)
    runtime.use_ledger(engine)
    writer = LedgerWriter(engine, Outbox(tmp_path / "outbox-gw.db"), metrics)
    writer.start()
    canary = CanaryController(
        runtime, CanaryMetrics(metrics.registry), engine=engine, record=writer.record
    )
    cache = CacheService(MemoryStore(), metrics)
    pipeline = Pipeline(runtime, Accountant(metrics, writer), cache, canary)
    alpha = Grant("key-a", "a", team="alpha", virtual=True)
    alpha_too = Grant("key-a2", "a2", team="alpha", virtual=True)
    beta = Grant("key-b", "b", team="beta", virtual=True)

    async def complexity(messages: tuple[Message, ...], grant: Grant) -> float:
        inbound = Inbound(
            ChatRequest(messages=messages), None, stream=False, key_id=grant.key_id, grant=grant
        )
        answer = await pipeline.handle(inbound)
        assert isinstance(answer, Answer)
        assert answer.receipt.complexity is not None
        return answer.receipt.complexity

    try:
        asked = [
            (Message(role="user", content=f"{m[0].content} {MARKER}"),)
            for m in prompts(NETWORKING, 25, seed=1)
        ]
        ids = []
        for messages in asked:
            inbound = Inbound(
                ChatRequest(messages=messages), None, stream=False, key_id="key-a", grant=alpha
            )
            answer = await pipeline.handle(inbound)
            assert isinstance(answer, Answer)
            ids.append(answer.receipt.request_id)
        await writer.flush()
        for request_id in ids:
            rate(engine, request_id, 0.0, key_id="key-a")
        similar = prompts(NETWORKING, 5, seed=9)
        before = {g.key_id: [await complexity(m, g) for m in similar] for g in (alpha_too, beta)}
        layer = runtime.active.adaptive
        assert layer is not None
        assert await layer.refresh() == 25
        after = {g.key_id: [await complexity(m, g) for m in similar] for g in (alpha_too, beta)}
        assert mean(after["key-a2"]) > mean(before["key-a2"]) + 0.2
        assert after["key-b"] == before["key-b"]
    finally:
        await writer.aclose()
        await runtime.aclose()


async def test_off_switch_stores_no_embeddings_and_feedback_labels_nothing(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    async for a in replica(ledger_url, policy_file(tmp_path, store=False), tmp_path):
        ids = [a.answer(m) for m in prompts(NETWORKING, 5, seed=1)]
        await a.writer.flush()
        for request_id in ids:
            rate(engine, request_id, 0.0)
        with engine.connect() as connection:
            answered = connection.execute(text("SELECT count(*) FROM ledger_requests")).scalar()
        assert answered == 5  # the requests are in the ledger...
        assert count(engine, AdaptiveSampleRow) == 0  # ...their embeddings are not
        assert count(engine, AdaptiveLabelRow) == 0


async def test_a_label_committed_late_with_a_lower_id_is_still_read(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    # PostgreSQL hands out ids at insert, not at commit: a reader may see id 3 before id 2
    # (three requests' labels: one request's labels replace each other, a re-vote).
    async for a in replica(ledger_url, policy_file(tmp_path, store=True), tmp_path):
        layer = a.runtime.active.adaptive
        assert layer is not None
        vector = "00" * 512
        with engine.begin() as connection:
            for label_id in (1, 3):
                connection.execute(
                    text(
                        "INSERT INTO adaptive_labels (id, request_id, ts, source, label, "
                        "embedding) VALUES (:id, :r, :ts, 'feedback', 1.0, :e)"
                    ),
                    {
                        "id": label_id,
                        "r": f"r{label_id}",
                        "ts": datetime.now(UTC),
                        "e": bytes.fromhex(vector),
                    },
                )
        assert await layer.refresh() == 2
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO adaptive_labels (id, request_id, ts, source, label, embedding) "
                    "VALUES (2, 'r2', :ts, 'feedback', 0.0, :e)"
                ),
                {"ts": datetime.now(UTC), "e": bytes.fromhex(vector)},
            )
        assert await layer.refresh() == 1
        assert len(layer.index) == 3
        assert layer.last_id == 3


def test_a_sampled_entry_survives_the_outbox(tmp_path: Path) -> None:
    from gateway.ledger.entry import LedgerEntry, SampledEntry
    from tests.support.ledger_rows import ledger_entry

    plain = ledger_entry("r1")
    values = {name: getattr(plain, name) for name in LedgerEntry.__dataclass_fields__}
    sampled = SampledEntry(**values, embedding=bytes(range(256)) * 2, base_score=0.25)
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put([sampled, plain])
    back = {e.id: e for e in outbox.peek(10)}
    outbox.close()
    assert back["r1"] == sampled or back["r1"] == plain  # one id: the first put wins
    assert isinstance(back["r1"], SampledEntry)
    assert back["r1"].embedding == sampled.embedding

"""Labels from a judge (``scorer: {kind: adaptive, judge: {...}}``): a sampled cheap answer is
sent to the next stronger tier and judged in the background, after the client has its answer;
the verdict becomes a ``judge`` label on the request's embedding that every replica learns
from; the extra calls are marked ledger rows; the per-minute limit and the daily budget hold.
On SQLite and PostgreSQL, over the shipped fake backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from adapters.base import ChatRequest, Completion, Message
from adapters.config import FakeConfig, FakeStep
from adapters.fake import FakeBackend
from gateway.cache.service import CacheService
from gateway.cache.store import MemoryStore
from gateway.canary.controller import CanaryController
from gateway.canary.counters import CanaryMetrics
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import AdaptiveLabelRow, AdaptiveSampleRow, RequestRow
from gateway.ledger.outbox import Outbox
from gateway.ledger.report import build_report
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.pipeline import Answer, Inbound, Pipeline
from gateway.routing.accounting import Accountant
from gateway.routing.judging import LabelSampler
from gateway.routing.plan import make_plan
from gateway.routing.runtime import Runtime
from tests.http.helpers import factory_with, gateway

CHAT = "/v1/chat/completions"
POLICY = """
version: 1
backends:
  small: {{type: fake, model: small-model}}
  big: {{type: fake, model: big-model}}
  judge: {{type: fake, model: judge-model}}
tiers:
  - {{name: cheap, max_score: 0.4, backends: [small]}}
  - {{name: strong, backends: [big]}}
scorer:
  kind: adaptive
  prior: 0.5
  judge: {{backend: judge, sample: {sample}, max_per_minute: {per_minute}, max_usd_per_day: {usd}}}
pricing:
  backends:
    small: {{usd_per_1m_input: 1, usd_per_1m_output: 1}}
    big: {{usd_per_1m_input: 1000000, usd_per_1m_output: 1000000}}
    judge: {{usd_per_1m_input: 1000000, usd_per_1m_output: 1000000}}
"""
CHEAP_TEXT = "Paris."
STRONG_TEXT = "The capital of France is Paris."


def policy_file(tmp: Path, *, sample: float = 1.0, per_minute: int = 100, usd: float = 1e6) -> Path:
    path = tmp / f"policy-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(POLICY.format(sample=sample, per_minute=per_minute, usd=usd))
    return path


def fakes(verdict: str = "0") -> dict[str, FakeBackend]:
    return {
        "small": FakeBackend.scripted("small", CHEAP_TEXT),
        "big": FakeBackend.scripted("big", STRONG_TEXT),
        "judge": FakeBackend.scripted("judge", verdict),
    }


def question(i: int = 0) -> str:
    return f"What is the capital of France? ({i})"


class Clock:
    """The sampler's clocks, moved by the test: a monotonic one and the wall time."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)


@dataclass
class Node:
    """One gateway process's request path over the shared ledger database."""

    runtime: Runtime
    writer: LedgerWriter
    sampler: LabelSampler
    pipeline: Pipeline
    metrics: Metrics

    def counted(self, outcome: str) -> float:
        """``tiergate_adaptive_judge_total{outcome=...}``."""
        value = self.metrics.registry.get_sample_value(
            "tiergate_adaptive_judge_total", {"outcome": outcome}
        )
        return value or 0.0

    async def ask(self, text: str) -> Answer:
        chat = ChatRequest(messages=(Message(role="user", content=text),))
        answer = await self.pipeline.handle(Inbound(chat, None, stream=False, key_id="k"))
        assert isinstance(answer, Answer)
        return answer

    def score(self, text: str) -> float:
        active = self.runtime.active
        chat = ChatRequest(messages=(Message(role="user", content=text),))
        plan = make_plan(
            active.policy, active.pool.capabilities, chat, None, adaptive=active.adaptive
        )
        assert plan.score is not None
        return plan.score.value

    async def settle(self) -> None:
        await self.sampler.drain()
        await self.writer.flush()


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    upgrade(ledger_url)
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def node(
    url: str, policy: Path, tmp: Path, backends: Mapping[str, FakeBackend], clock: Clock
) -> AsyncIterator[Node]:
    metrics = Metrics()
    engine = make_engine(url)
    runtime = Runtime(policy, metrics, factory=factory_with(backends))
    runtime.use_ledger(engine)
    writer = LedgerWriter(engine, Outbox(tmp / f"outbox-{uuid.uuid4().hex}.db"), metrics)
    writer.start()
    sampler = LabelSampler(
        metrics.registry, writer.record, engine, clock=clock.monotonic, now=clock.now
    )
    canary = CanaryController(
        runtime, CanaryMetrics(metrics.registry), engine=engine, record=writer.record
    )
    cache = CacheService(MemoryStore(), metrics)
    pipeline = Pipeline(runtime, Accountant(metrics, writer), cache, canary, sampler)
    try:
        yield Node(runtime, writer, sampler, pipeline, metrics)
    finally:
        await sampler.aclose()
        await writer.aclose()
        await runtime.aclose()
        engine.dispose()


def labels(engine: Engine) -> list[tuple[str, str, float, bytes]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                AdaptiveLabelRow.request_id,
                AdaptiveLabelRow.source,
                AdaptiveLabelRow.label,
                AdaptiveLabelRow.embedding,
            ).order_by(AdaptiveLabelRow.id)
        )
        return [(str(r), str(s), float(v), bytes(e)) for r, s, v, e in rows]


def embedding_of(engine: Engine, request_id: str) -> bytes:
    with engine.connect() as connection:
        stored = connection.execute(
            select(AdaptiveSampleRow.embedding).where(AdaptiveSampleRow.request_id == request_id)
        ).scalar_one()
    return bytes(stored)


def arms(engine: Engine) -> list[tuple[str | None, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(RequestRow.canary_arm, RequestRow.backend))
        return sorted(((a, str(b)) for a, b in rows), key=str)


class Gated(FakeBackend):
    """The shipped fake, held at a gate: it answers only once the test opens it."""

    gate: asyncio.Event
    events: list[str]

    async def acomplete(self, request: ChatRequest) -> Completion:
        self.events.append(f"{self.name} asked")
        await self.gate.wait()
        self.events.append(f"{self.name} answered")
        return await super().acomplete(request)


def gated(name: str, reply: str, events: list[str]) -> Gated:
    backend = Gated(name, FakeConfig(type="fake", script=(FakeStep(reply=reply),)))
    backend.gate, backend.events = asyncio.Event(), events
    return backend


@pytest.mark.parametrize(("verdict", "expected"), [("Grade: 1", 0.9), ("9", 0.1)])
async def test_a_sampled_cheap_answer_is_judged_after_the_client_has_it(
    engine: Engine, ledger_url: str, tmp_path: Path, verdict: str, expected: float
) -> None:
    """The client's answer (the cheap tier's) comes while the stronger tier is still held at
    its gate; only then do the stronger call and the judge's run, and the verdict becomes a
    ``judge`` label on that request's stored embedding: a judge preferring the strong answer
    gives a label near 1, one content with the cheap answer a label near 0."""
    backends = fakes(verdict)
    events: list[str] = []
    strong = gated("big", STRONG_TEXT, events)
    backends["big"] = strong
    policy = policy_file(tmp_path)
    async with gateway(policy, backends=backends, database_url=ledger_url) as (client, app):
        response = await client.post(
            CHAT, json={"messages": [{"role": "user", "content": question()}]}
        )
        events.append("client answered")
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == CHEAP_TEXT
        assert response.headers["x-tiergate-tier"] == "cheap"
        assert labels(engine) == []
        assert backends["judge"].requests == []
        strong.gate.set()
        await app.state.pipeline.labels.drain()
        await app.state.ledger.flush()
        request_id = response.headers["x-request-id"]
        # The client had its answer while the stronger tier could not have answered yet.
        assert events.index("client answered") < events.index("big answered")
        judged = backends["judge"].requests
        assert len(judged) == 1
        prompt = judged[0].messages[-1].content
        assert STRONG_TEXT in prompt
        assert CHEAP_TEXT in prompt
        assert [m.content for m in strong.requests[0].messages] == [question()]
        stored = labels(engine)
        assert [(r, s) for r, s, _, _ in stored] == [(request_id, "judge")]
        assert stored[0][2] == pytest.approx(expected)
        assert stored[0][3] == embedding_of(engine, request_id)
        # Both extra calls are booked as rows of their own, marked, and out of client figures.
        assert arms(engine) == [
            ("label_judge", "judge"),
            ("label_strong", "big"),
            (None, "small"),
        ]
        since = datetime.now(UTC) - timedelta(hours=1)
        report = build_report(engine, since=since)
        assert report["totals"]["requests"] == 1
        assert report["labelling"]["calls"] == 2
        assert report["labelling"]["cost_usd"] > 0


async def test_a_judged_samples_calls_are_booked_to_the_callers_team(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    """The stronger tier's and the judge's calls for a virtual key's request carry the key's
    team, so that team's report shows the labelling overhead its traffic caused (they had no
    team before)."""
    admin = {"authorization": "Bearer k-judge-admin-1111"}
    async with gateway(
        policy_file(tmp_path),
        backends=fakes("Grade: 5"),
        database_url=ledger_url,
        admin_key="k-judge-admin-1111",
    ) as (client, app):
        team = await client.post("/admin/teams", json={"name": "eng"}, headers=admin)
        assert team.status_code == 200, team.text
        made = await client.post("/admin/keys", json={"name": "web", "team": "eng"}, headers=admin)
        assert made.status_code == 201, made.text
        key = made.json()
        response = await client.post(
            CHAT,
            json={"messages": [{"role": "user", "content": question()}]},
            headers={"authorization": f"Bearer {key['key']}"},
        )
        assert response.status_code == 200, response.text
        await app.state.pipeline.labels.drain()
        await app.state.ledger.flush()
    with engine.connect() as connection:
        rows = connection.execute(select(RequestRow.canary_arm, RequestRow.key_id, RequestRow.team))
        booked = sorted(((str(a), k, t) for a, k, t in rows), key=str)
    assert booked == [
        ("None", key["id"], "eng"),
        ("label_judge", key["id"], "eng"),
        ("label_strong", key["id"], "eng"),
    ]
    report = build_report(engine, since=datetime.now(UTC) - timedelta(hours=1), team="eng")
    assert report["totals"]["requests"] == 1
    assert report["totals"]["overhead_calls"] == 2
    assert report["labelling"]["calls"] == 2


async def test_a_streamed_cheap_answer_is_sampled_too(
    engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    backends = fakes("0")
    async with gateway(policy_file(tmp_path), backends=backends, database_url=ledger_url) as (
        client,
        app,
    ):
        body = {"messages": [{"role": "user", "content": question()}], "stream": True}
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200
        await app.state.pipeline.labels.drain()
        assert [(s, v) for _, s, v, _ in labels(engine)] == [("judge", 1.0)]
        asked = backends["judge"].requests[0].messages[-1].content
        assert f"Candidate answer:\n{CHEAP_TEXT}\n" in asked  # the stream's text, whole


async def test_sample_zero_sends_nothing(
    engine: Engine, ledger_url: str, tmp_path: Path, clock: Clock
) -> None:
    backends = fakes()
    async for a in node(ledger_url, policy_file(tmp_path, sample=0), tmp_path, backends, clock):
        for i in range(5):
            assert (await a.ask(question(i))).receipt.tier == "cheap"
        await a.settle()
        assert a.sampler.pending == 0
    assert backends["big"].requests == []
    assert backends["judge"].requests == []
    assert labels(engine) == []
    assert [arm for arm, _ in arms(engine)] == [None] * 5


async def test_the_per_minute_limit_stops_sampling_until_the_minute_has_passed(
    engine: Engine, ledger_url: str, tmp_path: Path, clock: Clock
) -> None:
    backends = fakes()
    policy = policy_file(tmp_path, per_minute=2)
    async for a in node(ledger_url, policy, tmp_path, backends, clock):
        for i in range(4):
            await a.ask(question(i))
        await a.settle()
        assert len(backends["big"].requests) == 2
        assert len(backends["judge"].requests) == 2
        assert len(labels(engine)) == 2
        assert a.counted("rate_limited") == 2
        clock.t += 59.0
        await a.ask(question(10))
        await a.settle()
        assert len(backends["big"].requests) == 2
        clock.t += 1.0
        await a.ask(question(11))
        await a.settle()
        assert len(backends["big"].requests) == 3
        assert len(labels(engine)) == 3


async def test_the_daily_budget_stops_sampling_until_the_next_day(
    engine: Engine, ledger_url: str, tmp_path: Path, clock: Clock
) -> None:
    """Each judged sample costs dollars here (priced at $1 a token): a $5 budget lets the
    first through and stops the rest that day; the next UTC day it starts again."""
    backends = fakes()
    policy = policy_file(tmp_path, usd=5.0)
    async for a in node(ledger_url, policy, tmp_path, backends, clock):
        await a.ask(question(0))
        await a.settle()
        spent = a.sampler.spend.spent
        assert spent >= 5
        with engine.connect() as connection:
            booked = connection.execute(
                select(RequestRow.cost_usd).where(RequestRow.canary_arm.like("label_%"))
            ).scalars()
            assert sum(cost or Decimal(0) for cost in booked) == spent
        for i in range(1, 4):
            await a.ask(question(i))
        await a.settle()
        assert len(backends["big"].requests) == 1
        assert len(backends["judge"].requests) == 1
        assert a.counted("over_budget") == 3
        clock.t += 24 * 3600.0
        await a.ask(question(5))
        await a.settle()
        assert len(backends["big"].requests) == 2
        assert len(labels(engine)) == 2


async def test_a_full_queue_drops_the_sample(
    engine: Engine, ledger_url: str, tmp_path: Path, clock: Clock
) -> None:
    """concurrency 2 + queue 32 by default: with the stronger tier held, the 35th sample
    finds the queue full and is dropped (counted), the client answered all the same."""
    backends = fakes()
    strong = gated("big", STRONG_TEXT, [])
    backends["big"] = strong
    async for a in node(ledger_url, policy_file(tmp_path), tmp_path, backends, clock):
        for i in range(35):
            assert (await a.ask(question(i))).completion.text == CHEAP_TEXT
        assert a.sampler.pending == 34
        assert a.counted("dropped") == 1
        strong.gate.set()
        await a.settle()
        assert len(labels(engine)) == 34


async def test_a_judge_label_written_by_one_replica_steers_the_other(
    engine: Engine, ledger_url: str, tmp_path: Path, clock: Clock
) -> None:
    """Two gateway processes on one database: a judged sample on A (the judge preferred the
    strong answer) is read by B at its refresh, and B sends the same question to the strong
    tier from then on."""
    policy = policy_file(tmp_path)
    async for a in node(ledger_url, policy, tmp_path, fakes("0"), clock):
        async for b in node(ledger_url, policy, tmp_path, fakes("0"), clock):
            before = b.score(question())
            assert before <= 0.4
            assert (await a.ask(question())).receipt.tier == "cheap"
            await a.settle()
            assert [(s, v) for _, s, v, _ in labels(engine)] == [("judge", 1.0)]
            assert b.runtime.active.adaptive is not None
            assert await b.runtime.active.adaptive.refresh() == 1
            assert b.score(question()) > 0.4
            assert (await b.ask(question())).receipt.tier == "strong"

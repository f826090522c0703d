"""The confidence cascade through the real request path (``Pipeline.handle`` over a process's
services, fake backends with planted token log-probs, the SQLite ledger) and through HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from adapters.base import ChatRequest, Message
from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.app import Services
from gateway.ledger.models import RequestRow
from gateway.pipeline import Answer, Ended, Inbound, Stream
from gateway.policy import PolicyError
from gateway.settings import Settings
from tests.http.helpers import factory_with, gateway, policy_from, until

# confidence = 0.25 × (mean log-prob + 3) between -3 and -1, then 0.5 + 0.5 × (mean + 1) up to 0.
POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, capabilities: {logprobs: true}}
  big: {type: fake, model: big-model}
tiers:
  - name: cheap
    max_score: 0.3
    backends: [small]
    cascade:
      min_confidence: 0.5
      streamed: STREAMED
      calibration: {weights: {mean: 1.0}, bias: 0.0, points: [[-3, 0], [-1, 0.5], [0, 1]]}
  - {name: strong, backends: [big]}
pricing:
  backends:
    small: {usd_per_1m_input: 1, usd_per_1m_output: 2}
    big: {usd_per_1m_input: 10, usd_per_1m_output: 20}
"""


def hand_confidence(mean: float) -> float:
    if mean <= -1.0:
        return max(0.0, 0.25 * (mean + 3.0))
    return min(1.0, 0.5 + 0.5 * (mean + 1.0))


@pytest.fixture
def backends() -> dict[str, FakeBackend]:
    return {
        "small": FakeBackend.scripted("small", "small answer"),
        "big": FakeBackend.scripted("big", "big answer"),
    }


async def open_services(
    tmp_path: Path, backends: dict[str, FakeBackend], streamed: str = "buffer"
) -> Services:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("STREAMED", streamed))
    settings = Settings(
        policy=policy,
        watch_policy=False,
        database_url=SecretStr(f"sqlite:///{tmp_path / 'ledger.db'}"),
        outbox_path=tmp_path / "outbox.db",
    )
    return await Services.open(settings, factory_with(backends))


@pytest.fixture
async def services(tmp_path: Path, backends: dict[str, FakeBackend]) -> AsyncIterator[Services]:
    opened = await open_services(tmp_path, backends)
    try:
        yield opened
    finally:
        await opened.aclose()


def inbound(*, stream: bool = False, logprobs: bool = False, text: str = "hi there") -> Inbound:
    chat = ChatRequest(
        messages=(Message("user", text),), max_tokens=16, temperature=0.0, logprobs=logprobs
    )
    return Inbound(chat=chat, model=None, stream=stream, key_id="k1")


def plant(small: FakeBackend, mean: float) -> None:
    small.enqueue(FakeStep(reply="small answer", logprobs=(mean,)))


async def rows(services: Services) -> list[RequestRow]:
    assert services.ledger is not None
    await services.ledger.flush()
    with services.ledger.engine.connect() as connection:
        return list(connection.execute(select(RequestRow)).all())  # type: ignore[arg-type]


# Log-prob means just below, at and just above the threshold's point, and far on either side.
MEANS = [-2.5, -1.04, -1.0, -0.96, -0.2]


@pytest.mark.parametrize("mean", MEANS)
async def test_escalates_exactly_when_the_calibrated_confidence_is_below_the_threshold(
    services: Services, backends: dict[str, FakeBackend], mean: float
) -> None:
    plant(backends["small"], mean)
    result = await services.pipeline.handle(inbound())
    assert isinstance(result, Answer)
    confidence = hand_confidence(mean)
    verdict = result.receipt.cascade
    assert verdict is not None
    assert verdict.confidence == pytest.approx(confidence, abs=1e-6)
    escalates = confidence < 0.5
    assert verdict.decision == ("escalated" if escalates else "kept")
    assert result.completion.text == ("big answer" if escalates else "small answer")
    assert (result.receipt.tier, result.receipt.backend) == (
        ("strong", "big") if escalates else ("cheap", "small")
    )
    assert backends["small"].requests[-1].logprobs  # the cheap call asked for them
    assert len(backends["big"].requests) == (1 if escalates else 0)
    assert not backends["big"].requests or not backends["big"].requests[0].logprobs


async def test_log_probs_the_client_did_not_ask_for_are_not_returned(
    services: Services, backends: dict[str, FakeBackend]
) -> None:
    plant(backends["small"], -0.1)
    plain = await services.pipeline.handle(inbound())
    plant(backends["small"], -0.1)
    asked = await services.pipeline.handle(inbound(logprobs=True))
    assert isinstance(plain, Answer)
    assert isinstance(asked, Answer)
    assert plain.completion.logprobs is None
    assert [t["logprob"] for t in asked.completion.logprobs["content"]] == [-0.1, -0.1]


async def test_an_escalation_bills_both_calls_and_the_ledger_row_records_the_decision(
    services: Services, backends: dict[str, FakeBackend]
) -> None:
    plant(backends["small"], -2.0)
    escalated = await services.pipeline.handle(inbound(text="first question"))
    plant(backends["small"], -0.5)
    # Another prompt: the same one could be answered from the response cache.
    kept = await services.pipeline.handle(inbound(text="second question"))
    assert isinstance(escalated, Answer)
    assert isinstance(kept, Answer)
    # Fake tokens are words: a 2-word prompt and a 2-word answer from each backend.
    cheap = Decimal(2 * 1 + 2 * 2) / 1_000_000
    strong = Decimal(2 * 10 + 2 * 20) / 1_000_000
    assert escalated.receipt.cost == cheap + strong
    assert kept.receipt.cost == cheap
    by_id = {row.id: row for row in await rows(services)}
    row = by_id[escalated.receipt.request_id]
    assert (row.tier, row.backend, row.cascade) == ("strong", "big", "escalated")
    assert row.cascade_confidence == pytest.approx(0.25)
    assert (row.cost_usd, row.cascade_cost_usd) == (cheap + strong, cheap)
    assert (row.prompt_tokens, row.completion_tokens) == (4, 4)
    assert (row.cascade_prompt_tokens, row.cascade_completion_tokens) == (2, 2)
    assert (row.attempts, row.fallback_chain) == (2, "small>big")
    row = by_id[kept.receipt.request_id]
    assert (row.tier, row.backend, row.cascade) == ("cheap", "small", "kept")
    assert row.cascade_confidence == pytest.approx(0.75)
    assert (row.cost_usd, row.cascade_cost_usd) == (cheap, cheap)
    assert (row.prompt_tokens, row.completion_tokens, row.attempts) == (2, 2, 1)


async def test_an_unsure_answer_stands_when_the_next_tier_fails(
    services: Services, backends: dict[str, FakeBackend]
) -> None:
    plant(backends["small"], -2.0)
    backends["big"].enqueue(FakeStep(error="unavailable"))
    result = await services.pipeline.handle(inbound())
    assert isinstance(result, Answer)
    assert result.completion.text == "small answer"
    assert result.receipt.cascade is not None
    assert result.receipt.cascade.decision == "unescalated"
    (row,) = await rows(services)
    assert (row.cascade, row.backend, row.attempts, row.fallback_chain) == (
        "unescalated",
        "small",
        2,
        "small>big",
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_gone_during_the_escalation_is_billed_both_calls_as_abandoned(
    services: Services, backends: dict[str, FakeBackend], stream: bool
) -> None:
    """Cancelled (the client went away) while the next tier works: its row says 499 against
    that tier, both calls in its chain, and the discarded cheap answer's tokens."""
    plant(backends["small"], -2.0)
    backends["big"].enqueue(FakeStep(reply="big answer", delay_ms=60_000))
    big = services.runtime.active.pool["big"]
    task = asyncio.create_task(services.pipeline.handle(inbound(stream=stream)))
    await until(lambda: big.in_flight == 1, "the escalation to reach the strong tier")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert big.in_flight == 0
    (row,) = await rows(services)
    assert (row.status, row.tier, row.backend, row.cascade) == (499, "strong", "big", "escalated")
    assert (row.attempts, row.fallback_chain) == (2, "small>big")
    assert (row.cascade_prompt_tokens, row.cascade_completion_tokens) == (2, 2)
    assert row.completion_tokens == 2  # the cheap answer's; none came from the strong tier


async def read(stream: Stream) -> tuple[str, Ended]:
    """The stream's text and its end, read to the last event as the HTTP edge reads it."""
    try:
        events = [event async for event in stream.events]
    finally:
        await stream.close()
    *chunks, end = events
    assert isinstance(end, Ended)
    return "".join(c[1].delta for c in chunks if isinstance(c, tuple)), end


@pytest.mark.parametrize(("mean", "answer"), [(-2.0, "big answer"), (-0.5, "small answer")])
async def test_a_streamed_request_gets_the_buffered_or_the_escalated_answer(
    services: Services, backends: dict[str, FakeBackend], mean: float, answer: str
) -> None:
    plant(backends["small"], mean)
    result = await services.pipeline.handle(inbound(stream=True))
    assert isinstance(result, Stream)
    assert result.receipt.cascade is not None
    text, ended = await read(result)
    assert text == answer
    assert ended.finish == ("stop",)
    (row,) = await rows(services)
    escalated = answer == "big answer"
    assert (row.stream, row.status, row.cascade) == (
        True,
        200,
        "escalated" if escalated else "kept",
    )
    assert row.prompt_tokens == (4 if escalated else 2)
    # The cheap tier answered whole (not streamed): its call asked for log-probs.
    assert backends["small"].requests[-1].logprobs


async def test_streamed_off_streams_the_cheap_tier_without_a_cascade(
    tmp_path: Path, backends: dict[str, FakeBackend]
) -> None:
    services = await open_services(tmp_path, backends, streamed="off")
    try:
        plant(backends["small"], -2.5)
        result = await services.pipeline.handle(inbound(stream=True))
        assert isinstance(result, Stream)
        assert result.receipt.cascade is None
        text, _ = await read(result)
    finally:
        await services.aclose()
    assert text == "small answer"
    assert backends["big"].requests == []


async def test_the_headers_say_what_the_cascade_decided(
    tmp_path: Path, backends: dict[str, FakeBackend]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("STREAMED", "buffer"))
    plant(backends["small"], -2.0)
    async with gateway(policy, backends=backends) as (client, _):
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["x-tiergate-cascade"] == "escalated"
    assert response.headers["x-tiergate-confidence"] == "0.250"
    assert response.headers["x-tiergate-tier"] == "strong"
    assert response.json()["choices"][0]["message"]["content"] == "big answer"
    assert response.json()["choices"][0]["logprobs"] is None


def test_a_cascade_needs_log_probs_and_a_tier_above() -> None:
    text = POLICY.replace("STREAMED", "buffer").replace(", capabilities: {logprobs: true}", "")
    with pytest.raises(PolicyError) as caught:
        policy_from(text)
    assert "does not return token log-probs" in str(caught.value)
    assert "capabilities: {logprobs: true}" in str(caught.value)
    last = """
version: 1
backends:
  big: {type: fake, model: big-model, capabilities: {logprobs: true}}
tiers:
  - {name: strong, backends: [big], cascade: {min_confidence: 0.5}}
"""
    with pytest.raises(PolicyError, match="no next tier"):
        policy_from(last)


def test_a_calibration_that_is_not_isotonic_is_refused() -> None:
    text = POLICY.replace("STREAMED", "buffer").replace("[0, 1]]", "[0, 0.2]]")
    with pytest.raises(PolicyError, match="non-decreasing confidence"):
        policy_from(text)


def test_the_shipped_calibration_is_the_default() -> None:
    text = POLICY.replace("STREAMED", "buffer")
    start = text.index("      calibration:")
    text = text[:start] + text[text.index("\n", start) + 1 :]
    cascade = policy_from(text).tiers[0].cascade
    assert cascade is not None
    assert cascade.calibration.source.endswith("cascade_smollm2.json")

"""Dispatch: fallback chain, deadline, breaker, no retry after the first streamed byte."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest

from adapters.base import ChatRequest, Chunk
from adapters.config import FakeStep
from adapters.errors import BackendTimeout, BackendUnavailable
from adapters.fake import FakeBackend
from gateway.policy import Decision, Policy
from gateway.routing.attempts import DispatchError
from gateway.routing.dispatch import Dispatcher
from gateway.routing.pool import BackendPool
from tests.http.helpers import factory_with, policy_from

THREE = """
version: 1
backends:
  a: {type: fake}
  b: {type: fake}
  c: {type: fake}
tiers:
  - {name: t1, max_score: 0.3, backends: [a]}
  - {name: t2, max_score: 0.6, backends: [b]}
  - {name: t3, backends: [c]}
timeouts: {total_s: 0.5, per_try_s: 0.2, cold_start_s: 0}
breaker: {failures: 2, cooldown_s: 30}
"""

REQUEST = ChatRequest.from_prompt("hello there", max_tokens=50)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def setup(
    text: str = THREE, clock: Clock | None = None
) -> tuple[Policy, BackendPool, Dispatcher, dict[str, FakeBackend]]:
    backends = {n: FakeBackend.scripted(n, f"answer from {n}") for n in ("a", "b", "c")}
    policy = policy_from(text)
    tick = clock or time.monotonic
    pool = BackendPool.build(policy, factory=factory_with(backends), clock=tick)
    for state in pool.states():
        state.warm = True
    dispatcher = Dispatcher(pool, policy.timeouts, tick)
    return policy, pool, dispatcher, backends


def decision(policy: Policy, score: float = 0.0) -> Decision:
    return policy.decide(policy.route_for("auto"), score)


async def test_falls_back_along_the_chain() -> None:
    """A failing candidate passes the request to the next; the trace records both."""
    policy, _, dispatcher, backends = setup()
    backends["a"].enqueue(FakeStep(error="unavailable"))
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert served.candidate.backend == "b"
    assert served.completion.text == "answer from b"
    assert [(a.backend, a.error) for a in served.trace.attempts] == [
        ("a", "BackendUnavailable"),
        ("b", None),
    ]
    assert len(backends["c"].requests) == 0


async def test_per_try_timeout_and_total_deadline() -> None:
    """Each try gets per_try_s; the whole request stops at total_s even with candidates left."""
    policy, _, dispatcher, backends = setup()
    for name in ("a", "b", "c"):
        backends[name].enqueue(FakeStep(delay_ms=5_000))
    with pytest.raises(DispatchError) as info:
        await dispatcher.complete(decision(policy), REQUEST)
    attempts = info.value.attempts
    assert [a.error for a in attempts] == ["BackendTimeout"] * len(attempts)
    assert "within 0.2 s" in (attempts[0].message or "")
    # 0.5 s total: two tries of 0.2 s, then at most 0.1 s for the third.
    assert len(attempts) == 3
    assert "within 0.1 s" in (attempts[2].message or "")
    assert sum(a.latency_ms for a in attempts) < 600


async def test_breaker_opens_and_skips_then_probes() -> None:
    """After two failures a backend is skipped; after the cooldown one request probes it."""
    clock = Clock()
    policy, pool, dispatcher, backends = setup(clock=clock)
    backends["a"].enqueue(FakeStep(error="unavailable"), FakeStep(error="timeout"))
    for _ in range(2):
        served = await dispatcher.complete(decision(policy), REQUEST)
        assert served.candidate.backend == "b"
    assert pool["a"].breaker.state() == "open"
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert served.candidate.backend == "b"
    assert served.trace.attempts[0].backend == "b"
    assert "circuit open after 2 failures" in served.trace.skipped[0].reason
    assert len(backends["a"].requests) == 2
    clock.now += 30
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert served.candidate.backend == "a"  # the probe succeeded
    assert pool["a"].breaker.state() == "closed"


async def test_rejections_and_rate_limits_do_not_trip_the_breaker() -> None:
    """A backend that refuses a request or is busy is alive: its breaker stays closed."""
    policy, pool, dispatcher, backends = setup()
    for _ in range(3):
        backends["a"].enqueue(FakeStep(error="rejected"))
        backends["b"].enqueue(FakeStep(error="rate_limited"))
        await dispatcher.complete(decision(policy), REQUEST)
    assert pool["a"].breaker.state() == "closed"
    assert pool["b"].breaker.state() == "closed"


async def test_all_rejected_is_reported_as_such() -> None:
    """When every candidate refused the request, the error says so (a 400, not a 5xx)."""
    policy, _, dispatcher, backends = setup()
    for name in ("a", "b", "c"):
        backends[name].enqueue(FakeStep(error="rejected"))
    with pytest.raises(DispatchError) as info:
        await dispatcher.complete(decision(policy), REQUEST)
    assert info.value.all_rejected


async def test_cold_backend_gets_more_time_and_no_breaker_strike() -> None:
    """A backend still loading its model gets cold_start_s on top, and a timeout while cold is
    not counted as a failure (a cold load is not a dead backend)."""
    text = THREE.replace("cold_start_s: 0", "cold_start_s: 0.2").replace(
        "total_s: 0.5", "total_s: 5"
    )
    policy, pool, dispatcher, backends = setup(text)
    pool["a"].warm = False
    backends["a"].enqueue(FakeStep(delay_ms=300, reply="loaded"))
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert served.completion.text == "loaded"  # 0.3 s > per_try 0.2 s, < 0.2 + 0.2 cold
    for _ in range(3):
        backends["a"].enqueue(FakeStep(delay_ms=5_000))
        await dispatcher.complete(decision(policy), REQUEST)
    assert pool["a"].breaker.state() == "closed"


async def test_stream_falls_back_before_the_first_chunk() -> None:
    """A stream that fails before producing anything is retried on the next candidate."""
    policy, _, dispatcher, backends = setup()
    backends["a"].enqueue(FakeStep(error="unavailable"))
    opened = await dispatcher.open_stream(decision(policy), REQUEST)
    assert opened.candidate.backend == "b"
    text = "".join([c.delta async for c in dispatcher.chunks(opened)])
    assert text == "answer from b"
    assert opened.state.in_flight == 0


async def test_no_retry_after_the_first_streamed_chunk() -> None:
    """Once a chunk has been produced, a failure ends the stream: no other backend is tried."""
    policy, pool, dispatcher, backends = setup()
    backends["a"].enqueue(
        FakeStep(reply="one two three four", error="unavailable", fail_after_chunks=2)
    )
    opened = await dispatcher.open_stream(decision(policy), REQUEST)
    assert opened.candidate.backend == "a"
    received: list[str] = []
    with pytest.raises(BackendUnavailable):
        await _drain_into(received, dispatcher.chunks(opened))
    assert "".join(received) == "one two"
    assert backends["b"].requests == []
    assert backends["c"].requests == []
    assert pool["a"].in_flight == 0
    assert pool["a"].breaker.consecutive_failures == 1


async def test_unavailable_and_disabled_backends_are_skipped_with_reasons() -> None:
    """A disabled candidate is not tried, nor an unhealthy one while its one trial request is
    out; why is kept for the error message."""
    policy, pool, dispatcher, _ = setup()
    pool["a"].mark(False, "Ollama is not reachable")
    assert pool["a"].breaker.allow()  # another request holds the trial slot
    pool["b"].disabled = "disabled: set the environment variable X to enable it"
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert served.candidate.backend == "c"
    reasons = {s.backend: s.reason for s in served.trace.skipped}
    assert reasons == {
        "a": "unhealthy: Ollama is not reachable (one trial request at a time until it "
        "answers or a health check passes)",
        "b": "disabled: set the environment variable X to enable it",
    }


async def test_a_failed_health_check_lets_trial_traffic_through() -> None:
    """Half-open, not removed: after a failed check the next request still tries the backend;
    its answer closes the breaker, so traffic flows again before the next check."""
    policy, pool, dispatcher, backends = setup()
    pool["a"].mark(False, "connection refused")
    trial = await dispatcher.complete(decision(policy), REQUEST)
    assert trial.candidate.backend == "a"  # the backend came back: the trial answered
    assert pool["a"].breaker.state() == "closed"
    after = await dispatcher.complete(decision(policy), REQUEST)
    assert after.candidate.backend == "a"
    assert len(backends["a"].requests) == 2


async def test_a_failed_trial_falls_back_and_waits_for_the_next_check() -> None:
    clock = Clock()
    policy, pool, dispatcher, backends = setup(clock=clock)
    pool["a"].mark(False, "connection refused")
    backends["a"].enqueue(FakeStep(error="unavailable"))
    served = await dispatcher.complete(decision(policy), REQUEST)
    assert [a.backend for a in served.trace.attempts] == ["a", "b"]
    again = await dispatcher.complete(decision(policy), REQUEST)
    assert again.candidate.backend == "b"  # no second trial until the next check
    assert len(backends["a"].requests) == 1
    pool["a"].mark(False, "connection refused")  # the next check fails too: one more trial
    third = await dispatcher.complete(decision(policy), REQUEST)
    assert third.candidate.backend == "a"
    pool["a"].mark(True, "ok")
    assert pool["a"].breaker.state() == "closed"


async def test_a_passed_check_does_not_close_a_breaker_opened_by_failed_requests() -> None:
    clock = Clock()
    policy, pool, dispatcher, backends = setup(clock=clock)
    for _ in range(policy.breaker.failures):
        backends["a"].enqueue(FakeStep(error="unavailable"))
        await dispatcher.complete(decision(policy), REQUEST)
    assert pool["a"].breaker.state() == "open"
    pool["a"].mark(True, "ok")
    assert pool["a"].breaker.state() == "open"  # its own cooldown decides


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", ["ollama", "openai_compat"])
async def test_refused_port_falls_back(kind: str) -> None:
    """A real backend on a closed port fails fast with BackendUnavailable and the next
    candidate answers."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai_compat" else "")
    text = THREE.replace("a: {type: fake}", f"a: {{type: {kind}, model: m, base_url: '{url}'}}")
    # Generous budgets: this test is about the kind of error, not about time.
    text = text.replace("total_s: 0.5, per_try_s: 0.2", "total_s: 30, per_try_s: 10")
    policy = policy_from(text)
    backends = {n: FakeBackend.scripted(n, f"answer from {n}") for n in ("b", "c")}
    pool = BackendPool.build(policy, factory=factory_with(backends))
    for state in pool.states():
        state.warm = True
    dispatcher = Dispatcher(pool, policy.timeouts)
    try:
        served = await dispatcher.complete(decision(policy), REQUEST)
        assert served.candidate.backend == "b"
        first = served.trace.attempts[0]
        assert (first.backend, first.error) == ("a", "BackendUnavailable")
        opened = await dispatcher.open_stream(decision(policy), REQUEST)
        assert opened.candidate.backend == "b"
        await opened.release(ok=True)
    finally:
        await pool.aclose()


async def _drain_into(received: list[str], stream: AsyncIterator[Chunk]) -> None:
    async for chunk in stream:
        received.append(chunk.delta)


async def test_a_silent_stream_times_out_between_chunks() -> None:
    """A stream that goes quiet longer than stream_idle_s after its first chunk ends with a
    BackendTimeout (and the wait on the client is not counted: only waits on the backend)."""
    text = THREE.replace(
        "timeouts: {total_s: 0.5, per_try_s: 0.2, cold_start_s: 0}",
        "timeouts: {total_s: 5, per_try_s: 1, cold_start_s: 0, stream_idle_s: 0.2}",
    )
    policy, pool, dispatcher, _ = setup(text)
    # A chunk every 0.25 s: the first comes within per_try_s, the gap after it exceeds 0.2 s.
    slow = FakeBackend.scripted("a", "first then silence", tokens_per_second=4)
    pool["a"].backend = slow
    opened = await dispatcher.open_stream(decision(policy), REQUEST)
    received: list[str] = []
    with pytest.raises(BackendTimeout, match="went silent"):
        await _drain_into(received, dispatcher.chunks(opened))
    assert received == ["first"]
    assert pool["a"].in_flight == 0

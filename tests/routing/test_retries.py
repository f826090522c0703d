"""Retries on the same backend: a 429 or a 5xx is tried again after a jittered back-off or the
upstream's Retry-After, never past the deadline, at most ``per_backend`` times and within the
backend's retry budget; then the next candidate. Time is a fake clock that the recorded sleeps
move forward: nothing here waits for real."""

from __future__ import annotations

import pytest

from adapters.base import ChatRequest, Completion
from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.policy import Decision, Policy, PolicyError
from gateway.routing.attempts import DispatchError, Trace
from gateway.routing.dispatch import Dispatcher
from gateway.routing.pool import BackendPool
from gateway.routing.retry import Retrier, RetryBudget, retry_reason
from tests.http.helpers import factory_with, policy_from

POLICY = """
version: 1
backends:
  a: {type: fake}
  b: {type: fake}
tiers:
  - {name: t1, max_score: 0.5, backends: [a]}
  - {name: t2, backends: [b]}
timeouts: {total_s: 10, per_try_s: 5, cold_start_s: 0}
"""

REQUEST = ChatRequest.from_prompt("hello there", max_tokens=50)
UNAVAILABLE = FakeStep(error="server_error")  # HTTP 503


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """The waits asked for, each moving the clock on instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class Setup:
    def __init__(self, extra: str = "", *, jitter: float = 1.0) -> None:
        self.clock = Clock()
        self.sleeps = Sleeps(self.clock)
        self.backends = {n: FakeBackend.scripted(n, f"answer from {n}") for n in ("a", "b")}
        self.policy = policy_from(POLICY + extra)
        self.pool = BackendPool.build(
            self.policy, factory=factory_with(self.backends), clock=self.clock
        )
        for state in self.pool.states():
            state.warm = True
        # ``jitter`` picks where in [lo, hi] the "random" back-off falls: 1.0 is its ceiling.
        self.retrier = Retrier(
            self.policy.retries,
            self.clock,
            sleep=self.sleeps,
            uniform=lambda lo, hi: lo + (hi - lo) * jitter,
        )
        self.dispatcher = Dispatcher(
            self.pool, self.policy.timeouts, self.clock, retrier=self.retrier
        )

    def decision(self, pinned: str | None = None) -> Decision:
        return self.policy.decide(self.policy.route_for(pinned or "auto"), 0.0)

    def calls(self, name: str) -> int:
        return len(self.backends[name].requests)


def tries(trace: Trace) -> list[tuple[str, str | None, str | None]]:
    return [(a.backend, a.error, a.retry) for a in trace.attempts]


async def test_a_429_is_retried_after_its_retry_after() -> None:
    """A 429 saying Retry-After: 0.05 is retried on the same backend once that has passed; both
    tries are in the trace, and it is no fallback."""
    s = Setup()
    s.backends["a"].enqueue(FakeStep(error="rate_limited", retry_after_s=0.05))
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert served.candidate.backend == "a"
    assert tries(served.trace) == [
        ("a", "BackendRateLimited", None),
        ("a", None, "rate_limited"),
    ]
    assert served.trace.attempts[0].status == 429
    assert s.sleeps.waits == [0.05]
    assert (served.trace.fallbacks, served.trace.retries) == (0, 1)
    assert s.calls("b") == 0


async def test_a_5xx_is_retried_with_exponential_back_off() -> None:
    """Two 503s, then an answer: the waits double from base_ms (at the jitter's ceiling)."""
    s = Setup()
    s.backends["a"].enqueue(UNAVAILABLE, UNAVAILABLE)
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert served.candidate.backend == "a"
    assert tries(served.trace) == [
        ("a", "BackendUnavailable", None),
        ("a", "BackendUnavailable", "server_error"),
        ("a", None, "server_error"),
    ]
    assert s.sleeps.waits == pytest.approx([0.025, 0.05])
    assert served.trace.fallbacks == 0


async def test_the_back_off_is_full_jitter() -> None:
    """The wait is drawn from [0, base × 2ⁿ], capped at max_ms."""
    s = Setup("retries: {per_backend: 3, base_ms: 1000, max_ms: 1500}\n", jitter=0.5)
    s.backends["a"].enqueue(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    await s.dispatcher.complete(s.decision(), REQUEST)
    assert s.sleeps.waits == pytest.approx([0.5, 0.75, 0.75])


async def test_retries_stop_at_per_backend_then_the_next_candidate() -> None:
    """After per_backend retries the request moves on; the fallback count sees one move."""
    s = Setup()
    s.backends["a"].enqueue(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, "never reached")
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert served.candidate.backend == "b"
    assert tries(served.trace) == [
        ("a", "BackendUnavailable", None),
        ("a", "BackendUnavailable", "server_error"),
        ("a", "BackendUnavailable", "server_error"),
        ("b", None, None),
    ]
    assert (served.trace.fallbacks, served.trace.retries) == (1, 2)
    assert s.calls("a") == 3


async def test_per_backend_zero_turns_retries_off() -> None:
    s = Setup("retries: {per_backend: 0}\n")
    s.backends["a"].enqueue(FakeStep(error="rate_limited", retry_after_s=0.0))
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert [a.backend for a in served.trace.attempts] == ["a", "b"]
    assert s.sleeps.waits == []


async def test_a_retry_after_beyond_the_deadline_moves_on_at_once() -> None:
    """Retry-After longer than what is left of the deadline: no wait, the next candidate now."""
    s = Setup("retries: {max_ms: 60000}\n")
    s.backends["a"].enqueue(FakeStep(error="rate_limited", retry_after_s=30.0))
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert served.candidate.backend == "b"
    assert [a.backend for a in served.trace.attempts] == ["a", "b"]
    assert s.sleeps.waits == []
    assert s.clock.now == 0.0


async def test_a_retry_after_beyond_max_ms_moves_on_at_once() -> None:
    s = Setup()
    s.backends["a"].enqueue(FakeStep(error="rate_limited", retry_after_s=3.0))  # > 2000 ms
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert served.candidate.backend == "b"
    assert s.sleeps.waits == []


async def test_no_wait_reaches_past_the_deadline() -> None:
    """With the deadline nearly spent a back-off that would outlast it is not waited, and the
    request fails in time rather than sleeping."""
    s = Setup(jitter=1.0)
    s.backends["a"].enqueue(UNAVAILABLE)
    deadline_s = s.policy.timeouts.total_s
    # Every try costs 9.99 s of the 10 s deadline (the fake clock moves while a answers).
    original = s.backends["a"].acomplete

    async def slow(request: ChatRequest) -> Completion:
        s.clock.now += deadline_s - 0.01
        return await original(request)

    s.backends["a"].acomplete = slow  # type: ignore[method-assign]
    with pytest.raises(DispatchError) as info:
        await s.dispatcher.complete(s.decision("a"), REQUEST)
    assert s.sleeps.waits == []  # 25 ms of back-off > the 10 ms left
    assert [a.backend for a in info.value.attempts] == ["a"]
    assert s.clock.now <= deadline_s


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (FakeStep(error="rejected"), "BackendRejected"),  # a 400
        (FakeStep(error="unauthorized"), "BackendRejected"),  # a 401
        (FakeStep(error="unavailable"), "BackendUnavailable"),  # no status: unreachable
        (FakeStep(error="timeout"), "BackendTimeout"),
        (FakeStep(error="bad_response"), "BackendBadResponse"),
    ],
)
async def test_what_is_not_retried(step: FakeStep, error: str) -> None:
    """Only a 429 or a 5xx is retried: a rejection, an unreachable server, a timeout or
    garbage moves straight on to the next candidate."""
    s = Setup()
    s.backends["a"].enqueue(step)
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert tries(served.trace) == [("a", error, None), ("b", None, None)]
    assert s.sleeps.waits == []


async def test_a_breaker_that_opens_stops_the_retries() -> None:
    """A 5xx counts against the breaker: once it opens the backend is not retried further."""
    s = Setup("breaker: {failures: 2, cooldown_s: 30}\n")
    s.backends["a"].enqueue(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert [a.backend for a in served.trace.attempts] == ["a", "a", "b"]
    assert s.pool["a"].breaker.state() == "open"


async def test_a_half_open_backend_gets_its_probe_only() -> None:
    """A backend on probation (half-open after failures) is not retried: one probe is all."""
    s = Setup("breaker: {failures: 1, cooldown_s: 30}\n")
    s.backends["a"].enqueue(FakeStep(error="timeout"), FakeStep(error="rate_limited"))
    await s.dispatcher.complete(s.decision(), REQUEST)  # opens a's breaker
    s.clock.now += 30
    served = await s.dispatcher.complete(s.decision(), REQUEST)
    assert [a.backend for a in served.trace.attempts] == ["a", "b"]
    assert s.sleeps.waits == []


async def test_a_stream_failing_before_its_first_chunk_is_retried() -> None:
    s = Setup()
    s.backends["a"].enqueue(FakeStep(error="rate_limited", retry_after_s=0.1))
    opened = await s.dispatcher.open_stream(s.decision(), REQUEST)
    text = "".join([c.delta async for c in s.dispatcher.chunks(opened)])
    assert text == "answer from a"
    assert tries(opened.trace) == [("a", "BackendRateLimited", None), ("a", None, "rate_limited")]
    assert s.sleeps.waits == [0.1]


async def test_a_started_stream_is_never_retried() -> None:
    """A 5xx after the first chunk reaches the client as the stream's error: no second try."""
    s = Setup()
    s.backends["a"].enqueue(
        FakeStep(reply="one two three four", error="server_error", fail_after_chunks=2)
    )
    opened = await s.dispatcher.open_stream(s.decision(), REQUEST)
    with pytest.raises(Exception, match="HTTP 503"):
        async for _ in s.dispatcher.chunks(opened):
            pass
    assert s.calls("a") == 1
    assert s.calls("b") == 0
    assert s.sleeps.waits == []


async def test_the_budget_bounds_retries_under_constant_failure() -> None:
    """When a backend fails every call, retries add at most budget_ratio of its first tries
    plus the reserve (min_per_s over its 10 s window): here 20% of 100, plus 1."""
    s = Setup("retries: {min_per_s: 0.1}\n")
    requests = 100
    s.backends["a"].enqueue(*[UNAVAILABLE] * (requests * 3))
    for _ in range(requests):
        s.pool["a"].breaker.record_success()  # keep it closed: this test is about the budget
        served = await s.dispatcher.complete(s.decision(), REQUEST)
        assert served.candidate.backend == "b"
    retries = s.calls("a") - requests
    assert 0 < retries <= 0.2 * requests + 1 + 0.1 * s.clock.now
    assert s.calls("b") == requests


def test_a_budget_deposits_a_ratio_per_first_try_and_refills_its_reserve() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, clock=clock)
    assert [budget.withdraw() for _ in range(6)] == [True] * 5 + [False]  # 0.5/s × 10 s
    for _ in range(10):
        budget.deposit()
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    clock.now += 2.0  # one more reserve token
    assert [budget.withdraw() for _ in range(2)] == [True, False]
    clock.now += 1000.0  # the reserve keeps 10 s worth, no more
    assert sum(budget.withdraw() for _ in range(10)) == 5


def test_deposits_are_capped() -> None:
    """A long run of successes banks 100 tries' worth at most: no unbounded retry burst."""
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, clock=Clock())
    for _ in range(10_000):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(100)) == 20


def test_retry_reasons() -> None:
    from adapters.errors import (
        BackendBadResponse,
        BackendRateLimited,
        BackendRejected,
        BackendUnavailable,
    )

    assert retry_reason(BackendRateLimited("a", "slow down", status_code=429)) == "rate_limited"
    assert retry_reason(BackendRateLimited("tiny", "queue full", 1.0)) is None  # in-process busy
    assert retry_reason(BackendUnavailable("a", "down", status_code=502)) == "server_error"
    assert retry_reason(BackendBadResponse("a", "odd", status_code=500)) == "server_error"
    assert retry_reason(BackendUnavailable("a", "refused")) is None
    assert retry_reason(BackendUnavailable("a", "no model", status_code=404)) is None
    assert retry_reason(BackendRejected("a", "bad", 400)) is None


@pytest.mark.parametrize(
    ("retries", "says"),
    [
        ("{per_backend: -1}", "greater than or equal to 0"),
        ("{base_ms: 0}", "greater than 0"),
        ("{budget_ratio: 2}", "less than or equal to 1"),
        ("{base_ms: 500, max_ms: 100}", "lower base_ms or raise max_ms"),
        ("{attempts: 2}", "attempts"),
    ],
)
def test_bad_retries_fields_are_policy_errors(retries: str, says: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from(POLICY + f"retries: {retries}\n")
    assert "retries" in str(info.value)
    assert says in str(info.value)


def test_retries_are_on_by_default() -> None:
    policy: Policy = policy_from(POLICY)
    assert policy.retries.per_backend == 2
    assert (policy.retries.base_ms, policy.retries.budget_ratio) == (25.0, 0.2)

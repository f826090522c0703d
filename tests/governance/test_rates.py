"""Rate limits: enforced per key and team, shared by two limiters through a real Redis, kept per
process (with one warning) while Redis is killed, shared again once it is back.

The shared Redis (127.0.0.1:6379, or a private one when nothing answers there) is used with a
key prefix of the test's own, whose keys are deleted afterwards; nothing is flushed. The Redis
windows run on an injected clock, so no test waits for a window to pass. The in-process
windows are ``limits``' and keep ``time.time``: their tests never need time to pass.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from structlog.testing import capture_logs

from gateway.governance.rates import Limits, RateLimiter, RateVerdict, Subject
from gateway.governance.windows import Counts, duration, reset_s, weighted
from gateway.settings import Settings
from tests.support import redis as test_redis

WINDOW_S = 60.0


class Clock:
    """Time for the Redis windows: 1000 windows and 10 s after the epoch, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000 * WINDOW_S + 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server() -> Iterator[test_redis.RedisServer]:
    try:
        with test_redis.shared() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def prefix(redis_server: test_redis.RedisServer) -> Iterator[str]:
    """A key prefix of this test's own; its keys deleted afterwards (nothing else touched)."""
    name = f"tiergate:rl:test-{uuid.uuid4().hex}:"
    yield name
    client = redis_server.client()
    try:
        keys = list(client.scan_iter(match=name + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def limiter(
    request: pytest.FixtureRequest, redis_server: test_redis.RedisServer, prefix: str, clock: Clock
) -> AsyncIterator[RateLimiter]:
    """A limiter on the in-process windows (no Redis configured), then on the shared Redis."""
    url = redis_server.url() if request.param == "redis" else None
    limiter = RateLimiter(url, prefix=prefix, clock=clock)
    yield limiter
    await limiter.aclose()


def key(rpm: int | None = None, tpm: int | None = None, id: str = "k-1") -> Subject:
    return Subject("key", id, Limits(rpm, tpm))


def team(rpm: int | None = None, tpm: int | None = None, id: str = "t-1") -> Subject:
    return Subject("team", id, Limits(rpm, tpm))


def h(verdict: RateVerdict) -> dict[str, str]:
    return dict(verdict.headers)


async def test_requests_per_minute(limiter: RateLimiter) -> None:
    subjects = [key(rpm=5)]
    for n in range(5):
        verdict = await limiter.admit(subjects, 10)
        assert verdict.allowed
        assert verdict.retry_after_s is None
        assert h(verdict)["x-ratelimit-limit-requests"] == "5"
        assert h(verdict)["x-ratelimit-remaining-requests"] == str(4 - n)
        assert "retry-after" not in h(verdict)
        assert "x-ratelimit-limit-tokens" not in h(verdict)  # no tokens limit, no such headers
    refused = await limiter.admit(subjects, 10)
    assert not refused.allowed
    assert refused.limited_by == "key:k-1:requests"
    assert refused.retry_after_s is not None
    assert refused.retry_after_s > 0
    headers = h(refused)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after"]) >= refused.retry_after_s
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert [name for name, _ in refused.headers] == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "retry-after",
    ]
    # another key is untouched
    assert (await limiter.admit([key(rpm=5, id="k-2")], 10)).allowed


async def test_tokens_per_minute(limiter: RateLimiter) -> None:
    subjects = [key(tpm=1000)]
    for _ in range(3):
        assert (await limiter.admit(subjects, 300)).allowed
    refused = await limiter.admit(subjects, 300)
    assert not refused.allowed
    assert refused.limited_by == "key:k-1:tokens"
    assert refused.retry_after_s is not None
    assert refused.retry_after_s > 0
    assert h(refused)["x-ratelimit-remaining-tokens"] == "100"
    assert h(refused)["x-ratelimit-limit-tokens"] == "1000"
    fits = await limiter.admit(subjects, 100)  # what is left still goes
    assert fits.allowed
    assert h(fits)["x-ratelimit-remaining-tokens"] == "0"
    # a request over the whole limit never fits: no retry-after
    too_big = await limiter.admit([key(tpm=1000, id="k-2")], 1001)
    assert not too_big.allowed
    assert too_big.retry_after_s is None
    assert "retry-after" not in h(too_big)


async def test_the_tighter_of_key_and_team_is_shown(limiter: RateLimiter) -> None:
    subjects = [key(rpm=50, tpm=1000), team(rpm=3, tpm=100_000)]
    verdict = await limiter.admit(subjects, 200)
    assert h(verdict)["x-ratelimit-limit-requests"] == "3"  # the team's: 2 left against 49
    assert h(verdict)["x-ratelimit-remaining-requests"] == "2"
    assert h(verdict)["x-ratelimit-limit-tokens"] == "1000"  # the key's: 800 left against 99800
    assert h(verdict)["x-ratelimit-remaining-tokens"] == "800"


async def test_a_refusal_takes_nothing_from_the_other_limits(limiter: RateLimiter) -> None:
    shared_team = team(rpm=2)
    assert (await limiter.admit([key(rpm=10, tpm=5000, id="a"), shared_team], 100)).allowed
    assert (await limiter.admit([key(rpm=10, tpm=5000, id="b"), shared_team], 100)).allowed
    refused = await limiter.admit([key(rpm=10, tpm=5000, id="a"), shared_team], 100)
    assert not refused.allowed
    assert refused.limited_by == "team:t-1:requests"
    alone = await limiter.admit([key(rpm=10, tpm=5000, id="a")], 100)
    assert h(alone)["x-ratelimit-remaining-requests"] == "8"  # 2 counted, not 3
    assert h(alone)["x-ratelimit-remaining-tokens"] == "4800"


async def test_settle_adds_and_gives_back_tokens(limiter: RateLimiter) -> None:
    subjects = [key(tpm=1000), team(tpm=2000)]
    assert (await limiter.admit(subjects, 300)).allowed
    await limiter.settle(subjects, estimated=300, actual=500)  # used more: 500 counted
    await limiter.settle([key(tpm=1000)], estimated=100, actual=0)  # key only gives back 100
    verdict = await limiter.admit(subjects, 0)
    assert h(verdict)["x-ratelimit-remaining-tokens"] == "600"  # the key: 1000 - 400
    team_only = await limiter.admit([team(tpm=2000)], 0)
    assert h(team_only)["x-ratelimit-remaining-tokens"] == "1500"
    await limiter.settle(subjects, estimated=5000, actual=0)  # never below zero
    assert h(await limiter.admit([key(tpm=1000)], 0))["x-ratelimit-remaining-tokens"] == "1000"


async def test_no_limits_no_headers(limiter: RateLimiter) -> None:
    verdict = await limiter.admit([key(), team()], 10_000)
    assert verdict == RateVerdict(True, None, (), None)


async def test_the_window_slides_on_the_clock(
    redis_server: test_redis.RedisServer, prefix: str, clock: Clock
) -> None:
    limiter = RateLimiter(redis_server.url(), prefix=prefix, clock=clock)
    try:
        subjects = [key(rpm=4)]
        for _ in range(4):
            assert (await limiter.admit(subjects, 1)).allowed
        refused = await limiter.admit(subjects, 1)
        assert not refused.allowed
        assert refused.retry_after_s is not None
        # 10 s into the window: the next one starts in 50 s, where 4 × (1 - f) < 4 at once
        assert refused.retry_after_s == pytest.approx(50.001)
        # the window turns in 50 s: then the 4 counted start to leave (never 1m50s)
        assert h(refused)["x-ratelimit-reset-requests"] == "50s"
        clock.now += refused.retry_after_s - 0.01
        assert not (await limiter.admit(subjects, 1)).allowed  # not yet
        clock.now += 0.01
        assert (await limiter.admit(subjects, 1)).allowed  # then exactly one
        assert not (await limiter.admit(subjects, 1)).allowed
        clock.now += 2 * WINDOW_S  # two windows later: everything has gone
        verdict = await limiter.admit(subjects, 1)
        assert h(verdict)["x-ratelimit-remaining-requests"] == "3"
    finally:
        await limiter.aclose()


def seconds(written: str) -> float:
    """An OpenAI duration (``50s``, ``1m56s``, ``20ms``) in seconds."""
    if written.endswith("ms"):
        return float(written[:-2]) / 1000
    found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", written)
    assert written, written
    assert found is not None, written
    hours, minutes, secs = (float(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + secs


async def test_the_reset_is_never_further_than_the_window(
    redis_server: test_redis.RedisServer, prefix: str, clock: Clock
) -> None:
    """A per-minute limit says it resets within the minute (QA saw 1m56s): the reset is when
    the window turns, and then what was counted starts to leave."""
    limiter = RateLimiter(redis_server.url(), prefix=prefix, clock=clock)
    try:
        clock.now += 46.0  # 56 s into the window, as QA's were
        subjects = [key(rpm=2, tpm=200_000)]
        for _ in range(2):
            assert (await limiter.admit(subjects, 50)).allowed
        refused = await limiter.admit(subjects, 50)
        assert not refused.allowed
        said = h(refused)
        for dimension in ("requests", "tokens"):
            assert 0 < seconds(said[f"x-ratelimit-reset-{dimension}"]) <= WINDOW_S
        assert said["x-ratelimit-reset-requests"] == "4s"
        clock.now += seconds(said["x-ratelimit-reset-requests"]) + 0.001
        later = await limiter.admit(subjects, 50)
        assert later.allowed  # the window turned: one of the two has left
        assert seconds(h(later)["x-ratelimit-reset-requests"]) <= WINDOW_S
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("prev", [0, 1, 3, 1000])
@pytest.mark.parametrize("cur", [0, 1, 4, 1000])
@pytest.mark.parametrize("elapsed", [0.0, 0.5, 30.0, 59.999])
def test_reset_is_within_a_window_and_frees_room(prev: int, cur: int, elapsed: float) -> None:
    """For any counts: 0 when nothing is counted, else at most a window away, and a moment
    after it the weighted count is lower than now."""
    counts = Counts(prev, cur, elapsed)
    reset = reset_s(counts, WINDOW_S)
    assert 0.0 <= reset <= WINDOW_S
    if weighted(counts, WINDOW_S) == 0:
        assert reset == 0.0
        return
    after = elapsed + reset + 0.001 - WINDOW_S  # into the next window
    assert weighted(Counts(cur, 0, after), WINDOW_S) < weighted(counts, WINDOW_S)


async def test_two_instances_share_one_limit(
    redis_server: test_redis.RedisServer, prefix: str, clock: Clock
) -> None:
    # 200 admissions at once, with the default 50 ms bound: a burst queues for at most 16 calls
    # in flight per limiter, rather than connecting 100 times at once and timing out
    one = RateLimiter(redis_server.url(), prefix=prefix, clock=clock)
    two = RateLimiter(redis_server.url(), prefix=prefix, clock=clock)
    try:
        subjects = [key(rpm=100, tpm=1_000_000), team(rpm=1000)]
        verdicts = await asyncio.gather(
            *((one if n % 2 else two).admit(subjects, 50) for n in range(200))
        )
        allowed = sum(v.allowed for v in verdicts)
        assert 95 <= allowed <= 105
        assert allowed == 100  # one script per admission: exact, not just within 5%
        by_one = sum(v.allowed for n, v in enumerate(verdicts) if n % 2)
        assert 0 < by_one < 100  # both instances took part
        assert all(v.limited_by == "key:k-1:requests" for v in verdicts if not v.allowed)
        assert one.state()[0] == two.state()[0] == "ok"  # neither fell back to its own counts
        after = await one.admit([team(rpm=1000)], 0)  # refused admissions took nothing
        assert h(after)["x-ratelimit-remaining-requests"] == str(1000 - 100 - 1)
    finally:
        await one.aclose()
        await two.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[test_redis.PrivateRedis]:
    server = test_redis.PrivateRedis(tmp_path)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.close()


async def test_redis_killed_then_back(private_redis: test_redis.PrivateRedis, clock: Clock) -> None:
    limiter = RateLimiter(private_redis.url(), retry_s=5.0, clock=clock)
    subjects = [key(rpm=3)]
    try:
        assert limiter.state()[0] == "ok"
        assert (await limiter.admit(subjects, 1)).allowed  # counted in Redis
        private_redis.stop(signal.SIGKILL)
        with capture_logs() as logs:
            answers = [await limiter.admit(subjects, 1) for _ in range(5)]
            clock.now += 4.0  # before the retry time: Redis is not asked
            answers.append(await limiter.admit([key(rpm=3, id="k-2")], 1))
        # served from this process's own windows, which start empty: 3 allowed, then refused
        assert [v.allowed for v in answers] == [True, True, True, False, False, True]
        assert answers[3].limited_by == "key:k-1:requests"
        assert h(answers[3])["x-ratelimit-remaining-requests"] == "0"
        warnings = [e for e in logs if e["event"] == "rate_limits_local"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert "Error" in warnings[0]["reason"]
        assert limiter.state()[0] == "degraded"

        clock.now += 1.5  # the retry time has passed, Redis still dead: no second warning
        with capture_logs() as logs:
            assert (await limiter.admit([key(rpm=3, id="k-3")], 1)).allowed
        assert [e["event"] for e in logs] == []

        private_redis.start()  # back (empty: a crash keeps nothing)
        clock.now += 5.0
        with capture_logs() as logs:
            back = await limiter.admit(subjects, 1)
        assert [e["event"] for e in logs] == ["rate_limits_shared"]
        assert back.allowed
        assert h(back)["x-ratelimit-remaining-requests"] == "2"  # Redis's count, not the local
        assert limiter.state()[0] == "ok"
        check = redis.Redis(port=private_redis.port)
        try:
            stored = [k.decode() for k in check.scan_iter(match="*")]
        finally:
            check.close()
        assert stored
        assert all(k.startswith("tiergate:rl:key:k-1:r:") for k in stored)
    finally:
        await limiter.aclose()


async def test_redis_frozen_answers_within_the_bound(
    private_redis: test_redis.PrivateRedis, clock: Clock
) -> None:
    """SIGSTOP: connections are accepted, nothing answers; each admission waits at most about
    the call bound (50 ms) once, then the limits are local until the retry time."""
    limiter = RateLimiter(private_redis.url(), timeout_s=0.05, retry_s=5.0, clock=clock)
    subjects = [key(rpm=100)]
    try:
        assert (await limiter.admit(subjects, 1)).allowed
        private_redis.freeze()
        with capture_logs() as logs:
            loop = asyncio.get_running_loop()
            start = loop.time()
            first = await limiter.admit(subjects, 1)
            first_s = loop.time() - start
            start = loop.time()
            rest = [await limiter.admit(subjects, 1) for _ in range(20)]
            rest_s = loop.time() - start
        assert first.allowed
        assert all(v.allowed for v in rest)
        assert first_s < 1.0  # the bound (50 ms), with room for a loaded machine
        assert rest_s < first_s + 0.5  # no Redis call while local: nothing waits on it
        assert [e["event"] for e in logs] == ["rate_limits_local"]
        assert "Timeout" in logs[0]["reason"]
        private_redis.thaw()
        clock.now += 5.0
        with capture_logs() as logs:
            assert (await limiter.admit(subjects, 1)).allowed
        assert [e["event"] for e in logs] == ["rate_limits_shared"]
    finally:
        await limiter.aclose()


async def test_from_settings(redis_server: test_redis.RedisServer, prefix: str) -> None:
    shared = RateLimiter.from_settings(
        Settings(redis_url=SecretStr(redis_server.url()), redis_timeout_ms=80), prefix=prefix
    )
    local = RateLimiter.from_settings(Settings(redis_url=None), prefix=prefix)
    try:
        assert shared.state() == ("ok", "shared through Redis")
        assert local.state() == ("ok", "per process (no Redis configured)")
        assert (await shared.admit([key(rpm=1)], 1)).allowed
        assert not (await shared.admit([key(rpm=1)], 1)).allowed
        assert (await local.admit([key(rpm=1)], 1)).allowed  # its own counts
        client = redis_server.client()
        try:
            assert list(client.scan_iter(match=prefix + "*"))  # the shared one wrote to Redis
        finally:
            client.close()
    finally:
        await shared.aclose()
        await local.aclose()


def test_openai_durations() -> None:
    assert [duration(s) for s in (0, 0.0004, 0.02, 1, 1.5, 59.9994, 60, 360, 3725.5)] == [
        "0s",
        "0s",
        "20ms",
        "1s",
        "1.5s",
        "59.999s",
        "1m0s",
        "6m0s",
        "1h2m5.5s",
    ]

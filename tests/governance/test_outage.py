"""``Outage``: when a governance store asks Redis again, and what it logs once per outage."""

from __future__ import annotations

from structlog.testing import capture_logs

from gateway.governance.outage import Outage


class Clock:
    """The time a test sets (``now``)."""

    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_redis_is_asked_again_only_once_the_retry_time_has_passed() -> None:
    """After a failure Redis is skipped for ``retry_s``; each new failure puts it off again."""
    clock = Clock()
    outage = Outage(rates=True, budgets=True, retry_s=5.0, clock=clock)
    assert outage.usable()
    with capture_logs():
        outage.went_away(ConnectionRefusedError("refused"))
        assert not outage.usable()
        clock.now += 4.9
        assert not outage.usable()
        clock.now += 0.1
        assert outage.usable()
        outage.went_away(TimeoutError("timed out"))  # tried again, still away
        assert not outage.usable()
        assert outage.reason == "ConnectionRefusedError: refused"  # the outage's first failure
        outage.back()
    assert outage.usable()
    assert outage.reason is None


def test_one_line_per_kept_thing_when_redis_goes_and_when_it_comes_back() -> None:
    clock = Clock()
    outage = Outage(rates=True, budgets=True, retry_s=5.0, clock=clock)
    with capture_logs() as logs:
        outage.back()  # no outage: nothing to say
        outage.went_away(ConnectionResetError("reset"))
        clock.now += 5.0
        outage.went_away(ConnectionResetError("reset again"))
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("rate_limits_local", "warning"),
        ("budgets_local", "warning"),
    ]
    rates, budgets = logs
    assert rates["reason"] == "ConnectionResetError: reset"
    assert "tried again every 5 s" in rates["detail"]
    assert budgets["error"] == "ConnectionResetError"
    assert "tried again every 5 s" in budgets["detail"]
    with capture_logs() as logs:
        outage.back()
        outage.back()
    assert logs == [
        {
            "event": "rate_limits_shared",
            "log_level": "info",
            "detail": "Redis answers again: rate limits are shared by every replica",
            "was": "ConnectionResetError: reset",
        },
        {"event": "budgets_shared_again", "log_level": "info"},
    ]


def test_a_store_logs_only_what_it_keeps() -> None:
    for rates, budgets, away, back in [
        (True, False, ["rate_limits_local"], ["rate_limits_shared"]),
        (False, True, ["budgets_local"], ["budgets_shared_again"]),
    ]:
        outage = Outage(rates=rates, budgets=budgets, retry_s=1.0, clock=Clock())
        with capture_logs() as logs:
            outage.went_away(OSError("down"))
        assert [e["event"] for e in logs] == away
        with capture_logs() as logs:
            outage.back()
        assert [e["event"] for e in logs] == back


def test_a_long_reason_is_cut_to_300_characters() -> None:
    outage = Outage(rates=True, budgets=False, retry_s=1.0, clock=Clock())
    with capture_logs():
        outage.went_away(OSError("x" * 1000))
    assert outage.reason is not None
    assert len(outage.reason) == 300

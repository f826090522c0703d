from __future__ import annotations

from gateway.routing.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    """A success resets the count; N failures in a row open the breaker."""
    clock = Clock()
    breaker = Breaker(failures=3, cooldown_s=30, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state() == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state() == "open"
    assert not breaker.allow()
    assert breaker.retry_in() == 30


def test_half_open_lets_one_probe_through() -> None:
    """After the cooldown exactly one request probes; its success closes the breaker."""
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state() == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight
    breaker.record_success()
    assert breaker.state() == "closed"
    assert breaker.allow()


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    """A failing probe opens the breaker again from that moment."""
    clock = Clock()
    breaker = Breaker(failures=2, cooldown_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state() == "open"
    clock.now += 5
    assert not breaker.allow()


def test_released_probe_slot_can_be_taken_again() -> None:
    """A probe that ended without a verdict (client left) frees the slot."""
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()

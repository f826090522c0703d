"""The start every in-process model's run shares (``WorkerModel._begin``, ``Run``): a request
given up while it waited, the load, the deadline and the timings."""

from __future__ import annotations

import pytest

from adapters._in_process import Run, Stop, WorkerModel
from adapters.chat import ChatRequest, Completion
from adapters.errors import BackendError, BackendTimeout


class Counted(WorkerModel):
    """A worker model whose load takes 12.5 ms the first time; it never generates."""

    def __init__(self) -> None:
        super().__init__("counted", "test", max_queue=0)
        self.loads = 0

    def _run(self, request: ChatRequest, emit: object, cancel: Stop, started: float) -> Completion:
        raise NotImplementedError

    def _ensure_loaded(self) -> float | None:
        self.loads += 1
        return 12.5 if self.loads == 1 else None

    def _unload(self) -> None:
        return None

    def _error(self, exc: Exception) -> BackendError:
        raise exc


async def test_a_request_given_up_while_it_waited_does_not_load_the_model() -> None:
    model = Counted()
    cancel = Stop()
    cancel.set()
    with pytest.raises(BackendTimeout, match="abandoned while it waited") as caught:
        model._begin(cancel, 0.0, 30.0)
    assert caught.value.backend == "counted"
    assert model.loads == 0
    await model.aclose()


async def test_the_load_is_timed_once_and_the_deadline_starts_after_it() -> None:
    model = Counted()
    first = model._begin(Stop(), 1.0, 30.0)
    again = model._begin(Stop(), 2.0, 30.0)
    assert (first.load_ms, again.load_ms) == (12.5, None)
    assert first.begun <= first.deadline - 30.0
    assert first.started == 1.0
    first.check_deadline()  # 30 s to go: nothing raised
    await model.aclose()


def test_past_the_deadline_the_run_says_which_setting_to_change() -> None:
    run = Run("tiny", started=0.0, begun=0.0, load_ms=None, timeout_s=2.5, deadline=0.0)
    with pytest.raises(BackendTimeout, match=r"timeout_s=2\.5.*raise `timeout_s`") as caught:
        run.check_deadline()
    assert caught.value.backend == "tiny"


def test_timings_count_from_the_request_and_from_the_worker() -> None:
    run = Run("tiny", started=10.0, begun=10.5, load_ms=300.0, timeout_s=60.0, deadline=70.5)
    timings = run.timings(12.0, ttft_ms=700.0)
    assert timings.latency_ms == pytest.approx(2000.0)
    assert timings.server_ms == pytest.approx(1500.0)  # the worker's time, the load included
    assert (timings.ttft_ms, timings.load_ms) == (700.0, 300.0)

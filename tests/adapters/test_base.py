"""What every adapter shares: the blocking ``complete()`` over ``acomplete()``, the one way
errors are translated, per-call clients, and capabilities read through the Protocol."""

from __future__ import annotations

import asyncio
import threading

import pytest

from adapters._blocking import ClientSlot, run_blocking
from adapters.base import Backend, ChatRequest, Completion
from adapters.capabilities import FAKE, effective
from adapters.config import CapabilitiesConfig, FakeConfig, FakeStep
from adapters.errors import BackendError, BackendTimeout, BackendUnavailable, translated
from adapters.fake import FakeBackend


class Counting(FakeBackend):
    """A fake whose ``acomplete`` records the thread and loop it ran on."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.ran_on: list[tuple[int, asyncio.AbstractEventLoop]] = []

    async def acomplete(self, request: ChatRequest) -> Completion:
        self.ran_on.append((threading.get_ident(), asyncio.get_running_loop()))
        return await super().acomplete(request)


def test_complete_is_acomplete_on_a_loop_of_its_own() -> None:
    """Called without a running loop, ``complete`` runs the adapter's own ``acomplete`` in the
    calling thread, on a loop that is closed when the call ends."""
    backend = Counting()
    result = backend.complete("one two three", max_new_tokens=2, temperature=0.5, top_k=3)

    assert result.completion == "This is"
    assert result.metadata["finish_reason"] == "length"
    assert result.prompt_tokens == 3
    ((thread, loop),) = backend.ran_on
    assert thread == threading.get_ident()
    assert loop.is_closed()
    (request,) = backend.requests
    assert request.max_tokens == 2
    assert request.temperature == 0.5
    assert request.top_k == 3


async def test_complete_inside_a_running_loop_runs_in_a_worker_thread() -> None:
    """Called from a coroutine, ``complete`` blocks it and runs ``acomplete`` on another
    thread's loop (never the caller's, which is busy waiting)."""
    backend = Counting()
    result = backend.complete("hello")

    assert result.completion
    ((thread, loop),) = backend.ran_on
    assert thread != threading.get_ident()
    assert loop is not asyncio.get_running_loop()


def test_complete_raises_the_adapters_error() -> None:
    """A scripted failure leaves ``complete`` as the same ``BackendError``."""
    backend = FakeBackend.scripted("f", FakeStep(error="timeout"))
    with pytest.raises(BackendTimeout, match="scripted failure"):
        backend.complete("hi")


def test_complete_refuses_a_non_positive_max_new_tokens() -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        FakeBackend("f").complete("hi", max_new_tokens=0)


def test_translated_maps_chains_and_passes_through() -> None:
    """A foreign exception leaves as the mapped ``BackendError`` with the original chained; a
    ``BackendError`` and a non-``Exception`` pass through unchanged."""

    def to_backend_error(exc: Exception) -> BackendError:
        return BackendUnavailable("b", f"mapped {type(exc).__name__}")

    with (
        pytest.raises(BackendUnavailable, match="mapped KeyError") as caught,
        translated(to_backend_error),
    ):
        raise KeyError("x")
    assert isinstance(caught.value.__cause__, KeyError)

    own = BackendTimeout("b", "own")
    with pytest.raises(BackendTimeout) as passed, translated(to_backend_error):
        raise own
    assert passed.value is own

    with pytest.raises(KeyboardInterrupt), translated(to_backend_error):
        raise KeyboardInterrupt


async def test_client_slot_shares_one_client_and_gives_a_blocking_call_its_own() -> None:
    """Callers on a long-lived loop share one client, closed by ``aclose``; a blocking call
    gets one of its own, closed when the call ends."""
    opened: list[int] = []
    closed: list[int] = []

    def open_client() -> int:
        opened.append(len(opened))
        return opened[-1]

    async def close(client: int) -> None:
        closed.append(client)

    slot = ClientSlot(open_client, close)

    async def use_twice() -> tuple[int, int]:
        return slot.get(), slot.get()

    shared = slot.get()
    assert slot.get() == shared == 0
    first, second = await asyncio.to_thread(run_blocking, use_twice())
    assert first == second == 1
    assert closed == [1]
    await slot.aclose()
    assert closed == [1, 0]
    assert opened == [0, 1]


def test_effective_reads_the_protocol_then_the_policy() -> None:
    """A backend's capabilities come from its ``capabilities``, with its ``context_window``
    where they leave the window open, then the policy's ``capabilities:`` on top."""
    config = FakeConfig(type="fake", capabilities=CapabilitiesConfig(vision=False))
    backend: Backend = FakeBackend("f", config)

    caps = effective(backend, config)

    assert backend.capabilities == FAKE
    assert caps.tools
    assert not caps.vision
    assert caps.context_window is None

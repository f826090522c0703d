"""A model run inside the gateway's process on one worker thread of its own (the ``tiny`` and
``artifact`` backends): one request at a time, at most ``max_queue`` more waiting (beyond that a
request is refused at once as busy, so the policy can fall back), the event loop only waiting on
futures and receiving streamed text through ``call_soon_threadsafe``. A request that is given up
(a closed stream, a cancelled call: the client went away) sets its ``cancel`` event, which the
generation loop checks between tokens; one still queued never starts. The close or the
cancellation returns once the worker has let go of it, so the model is free by then, and
reports what the call had spent (``adapters.spent``): the prompt read and the tokens generated
before the stop (nothing for one that never started).

A subclass says how to load, run and unload its model, and how its library's errors read as
ours (``_error``); everything here runs them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from adapters import spent
from adapters.base import BlockingComplete
from adapters.chat import ChatRequest, Chunk, Completion, Timings, Usage
from adapters.errors import (
    BackendError,
    BackendRateLimited,
    BackendTimeout,
    BackendUnavailable,
    translated,
)

P = ParamSpec("P")
T = TypeVar("T")

Emit = Callable[[str], None]


class Stop(threading.Event):
    """Set by the caller to stop a generation between tokens (it gave up on the call). The
    worker, as it stops for it, notes what the generation had cost by then in ``spent``, which
    the caller reads once the worker has let go."""

    def __init__(self) -> None:
        super().__init__()
        self.spent: Usage | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """A request the worker has taken up (``WorkerModel._begin``): when it was asked for
    (``started``), when the worker began on it (``begun``), what loading the model cost then
    (``load_ms``; None: it was loaded already) and when the generation must end (``deadline``,
    ``timeout_s`` after the load)."""

    backend: str
    started: float
    begun: float
    load_ms: float | None
    timeout_s: float
    deadline: float

    def check_deadline(self) -> None:
        """Raise ``BackendTimeout`` once the generation has run past ``timeout_s``."""
        if time.perf_counter() > self.deadline:
            raise BackendTimeout(
                self.backend,
                f"generation ran past timeout_s={self.timeout_s}; lower max_tokens or raise "
                f"`timeout_s` of this backend",
            )

    def timings(self, end: float, ttft_ms: float | None) -> Timings:
        """The answer's timings, had it ended at ``end``; server time includes the load."""
        return Timings(
            latency_ms=(end - self.started) * 1000.0,
            ttft_ms=ttft_ms,
            server_ms=(end - self.begun) * 1000.0,
            load_ms=self.load_ms,
        )


class WorkerModel(BlockingComplete):
    """The server contract's ``acomplete``/``astream``/``prewarm``/``aclose`` over one worker
    thread; subclasses implement ``_run``, ``_ensure_loaded``, ``_unload`` and ``_error``."""

    def __init__(self, name: str, kind: str, max_queue: int) -> None:
        self._name = name
        self._max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{kind}-{name}")
        self._admit = threading.Lock()
        self._in_flight = 0
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    # --- what a subclass provides (each runs on the worker thread but _error) ----------------

    @abstractmethod
    def _run(
        self, request: ChatRequest, emit: Emit | None, cancel: Stop, started: float
    ) -> Completion:
        """Answer ``request``, passing text to ``emit`` as it comes (streams); when ``cancel``
        is set, stop at the next token, noting the usage so far in ``cancel.spent``."""

    @abstractmethod
    def _ensure_loaded(self) -> float | None:
        """Load the model if it is not; the load time in ms if it loaded now."""

    @abstractmethod
    def _unload(self) -> None: ...

    @abstractmethod
    def _error(self, exc: Exception) -> BackendError:
        """The library's exception as one of ours."""

    # --- for a subclass's _run ---------------------------------------------------------------

    def _begin(self, cancel: Stop, started: float, timeout_s: float) -> Run:
        """The start of every ``_run``: a request given up while it waited goes no further;
        else the model is loaded (when it is not: this is where a missing extra is reported)
        and the generation's ``timeout_s`` starts."""
        if cancel.is_set():
            raise BackendTimeout(self._name, "the request was abandoned while it waited")
        begun = time.perf_counter()
        load_ms = self._ensure_loaded()
        return Run(self._name, started, begun, load_ms, timeout_s, time.perf_counter() + timeout_s)

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        cancel = Stop()
        future = self._submit(request, None, cancel, time.perf_counter())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            spent.spent(await _given_up(future, cancel))
            raise

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk] = asyncio.Queue()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, Chunk(delta=text))

        cancel = Stop()
        future = self._submit(request, emit, cancel, time.perf_counter())
        done = asyncio.wrap_future(future)
        getter: asyncio.Future[Chunk] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                waiters: set[asyncio.Future[Any]] = {getter, done}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                # The worker finished: drain what it queued before the result.
                while not queue.empty():
                    yield queue.get_nowait()
                result = done.result()  # raises the worker's BackendError
                yield Chunk(  # logprobs (when asked for) come whole with the last chunk
                    finish_reason=result.finish_reason,
                    usage=result.usage,
                    timings=result.timings,
                    logprobs=result.logprobs,
                    stop_sequence=result.stop_sequence,
                )
                return
        finally:
            cancel.set()
            if getter is not None:
                getter.cancel()
            if done.done():
                if not done.cancelled():
                    done.exception()  # read: the worker ended before the consumer left
            else:
                # The consumer left first (a closed stream, a cancelled call). Nothing will read
                # this future: cancelled, it takes no exception (the worker's "generation
                # stopped") that asyncio would report as never retrieved.
                done.cancel()
                spent.spent(await _given_up(future, cancel))

    async def prewarm(self) -> None:
        """Load the model now, so the first request does not pay for it."""
        await asyncio.wrap_future(self._executor.submit(self._on_worker, self._ensure_loaded))

    async def aclose(self) -> None:
        """Free the model after the work already queued; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._executor.submit(self._unload))
        self._executor.shutdown(wait=False)

    # --- worker side ------------------------------------------------------------------------

    def _submit(
        self, request: ChatRequest, emit: Emit | None, cancel: Stop, started: float
    ) -> Future[Completion]:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        with self._admit:
            if self._in_flight > self._max_queue:
                raise BackendRateLimited(
                    self._name,
                    f"busy: {self._in_flight} requests already waiting for the in-process model "
                    f"(it answers one at a time); retry shortly, raise `max_queue` "
                    f"({self._max_queue}), or let the policy fall back to another tier",
                    retry_after=1.0,
                )
            self._in_flight += 1
        future = self._executor.submit(self._on_worker, self._run, request, emit, cancel, started)
        future.add_done_callback(self._release)
        return future

    def _on_worker(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``work`` (on the worker thread) with the library's errors mapped to ours."""
        with translated(self._error):
            return work(*args, **kwargs)

    def _release(self, _future: Future[Completion]) -> None:
        with self._admit:
            self._in_flight -= 1


async def _given_up(future: Future[Completion], cancel: Stop) -> Usage:
    """A request its caller gave up on: one still queued never starts; one running stops at
    its next token (``cancel``), and this returns once it has, its outcome read and dropped, so
    the model is free when the caller's cancellation goes on (to the ledger row, the next
    request). Only a prompt being read (prefill, not interruptible) makes it wait longer.
    Returns what it spent: the usage the worker noted as it stopped (or its answer's, had it
    just finished); none for one that never started or stopped before generating."""
    cancel.set()
    if future.cancel():
        return Usage()
    try:
        return (await asyncio.wrap_future(future)).usage
    except Exception:  # the worker's "generation stopped", or any end
        return cancel.spent if cancel.spent is not None else Usage()

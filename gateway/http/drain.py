"""The end of SIGTERM's drain, as the requests in flight see it. uvicorn gives them
TIERGATE_DRAIN_S, then cancels what is left: a request cut that way just loses its connection,
and its client cannot tell a shutdown from a network fault. A little before that deadline the
``Drain`` tells every request still in flight to stop, and each is answered in its API's words
(``gateway.http.stopping``) saying the gateway is shutting down and to retry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# How long before uvicorn's own cut the requests are told to stop: time to send the answer,
# account for the request (its journal line) and close the connection.
LEAD_S = 2.0

# A stream under way: its last event says so.
SHUTTING_DOWN = (
    "the gateway is shutting down (a restart or a rollout) and ended this stream before its "
    "end; the answer above is incomplete: retry the request, another instance will serve it"
)
# A request with nothing sent yet (a whole answer, a stream before its first chunk): its 503.
SHUTTING_DOWN_BEFORE_ANSWER = (
    "the gateway is shutting down (a restart or a rollout) and ended this request before its "
    "answer: retry the request, another instance will serve it"
)
RETRY_AFTER_S = 1  # another instance is serving already; this one is gone in a moment


def stop_after(drain_s: float) -> float:
    """Seconds from SIGTERM to the requests' stop: ``LEAD_S`` before the drain's end, or half
    way through a drain shorter than twice that."""
    return max(drain_s - LEAD_S, drain_s / 2)


class Drain:
    """One process's shutdown as the requests in flight watch it: ``begin`` (the server stopped
    accepting) starts the clock, and at ``stop_after(drain_s)`` every watcher is called once."""

    def __init__(self) -> None:
        self._watchers: set[Callable[[], None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.stopped = False

    def begin(self, drain_s: float) -> None:
        """The server is shutting down and lets requests in flight run ``drain_s`` more."""
        if self._timer is None and not self.stopped:
            self._timer = asyncio.get_running_loop().call_later(stop_after(drain_s), self.stop)

    def stop(self) -> None:
        """Tell every request in flight to end now."""
        self.stopped = True
        watchers, self._watchers = self._watchers, set()
        for watcher in watchers:
            watcher()

    def watch(self, on_stop: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_stop`` when the requests must stop (at once if they already must); returns
        the call that stops watching."""
        if self.stopped:
            on_stop()
            return _nothing
        self._watchers.add(on_stop)
        return lambda: self._watchers.discard(on_stop)


def _nothing() -> None:
    pass

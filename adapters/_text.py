"""Pure text helpers for adapters that generate token by token."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Streams text while holding back anything that could be the start of a stop string.

    ``feed`` returns the text that is safe to emit now and the stop string that completed, if
    one did (``None`` otherwise); text from the stop string on is never emitted. When several
    complete in the same text, the answer ends at the one that starts first (the shortest of
    those starting there). ``flush`` releases what was held back when generation ends for
    another reason.
    """

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        if not self._stops:
            return text, None
        buf = self._held + text
        hits = [(i, len(s), s) for s in self._stops if (i := buf.find(s)) != -1]
        if hits:
            self._held = ""
            at, _, stop = min(hits)
            return buf[:at], stop
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], None

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

"""A streamed answer's progress, noted in the write-ahead journal as it goes
(``gateway.ledger.streamed``): a process killed mid-stream leaves an interrupted row priced with
the output tokens its client had received, not the prompt alone.

Coalesced, to keep the per-chunk path cheap: a line each time the pieces sent (text, thinking or
tool-call pieces, as ``Tally`` counts them; every choice's) reach a multiple of ``EVERY_PIECES``,
written before the piece that reaches it goes to the client; and ``WITHIN_S`` after the first
piece not yet noted, for a stream slower than that (a timer, armed once per line). Never synced
on its own. So a kill loses at most ``EVERY_PIECES - 1`` pieces or ``WITHIN_S`` seconds of a
stream's progress: the row then bills that little less of what the backend generated. Tokens
are counted with the gateway's tokenizer (``count_exact``, as a stream cut short is counted),
each piece once: the pieces between two lines are counted together and added up.
"""

from __future__ import annotations

import asyncio
import time

from adapters.base import Timings, Usage
from gateway.ledger.journal import Journal
from gateway.ledger.streamed import Streamed
from gateway.pipeline.flight import Flight
from gateway.routing.tally import Tally
from gateway.scoring.tokens import count_exact

EVERY_PIECES = 64  # a progress line at least every this many pieces sent
WITHIN_S = 0.5  # ... and at most this long after a piece, while the stream is slower


class Progress:
    """One stream's progress lines. ``sent`` for each chunk that sent pieces; ``stop`` once the
    stream ends, however it ends (its real row replaces what these say)."""

    __slots__ = ("_counted", "_due", "_flight", "_journal", "_sent", "_tally", "_timer", "_tokens")

    def __init__(self, flight: Flight, tally: Tally, journal: Journal) -> None:
        self._flight = flight
        self._tally = tally
        self._journal = journal
        self._counted = [0] * tally.choices  # each choice's pieces counted so far
        self._tokens = 0  # their tokens, every choice's
        self._sent = 0  # pieces sent, every choice's
        self._due = EVERY_PIECES  # the pieces sent at which the next line is due
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, flight: Flight, tally: Tally) -> Progress | None:
        """The stream's progress, or None without a journal (nothing would keep it)."""
        ledger = flight.pipeline.accountant.ledger
        journal = ledger.journal if ledger is not None else None
        return cls(flight, tally, journal) if journal is not None else None

    def sent(self, pieces: int) -> None:
        """``pieces`` more are on their way to the client (``Tally.add`` noted them)."""
        self._sent += pieces
        if self._sent >= self._due:
            self._due = self._sent - self._sent % EVERY_PIECES + EVERY_PIECES
            self.note()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WITHIN_S, self.note)

    def note(self) -> None:
        """Journal the stream as it stands: the row it leaves if the process dies now."""
        self.stop()
        flight = self._flight
        if flight.settled:
            return  # its real row is written
        for index, pieces in enumerate(self._tally.received):
            counted = self._counted[index]
            if len(pieces) > counted:
                self._tokens += count_exact("".join(pieces[counted:]))
                self._counted[index] = len(pieces)
        outcome = flight.outcome
        elapsed_ms = (time.perf_counter() - outcome.started) * 1000.0
        usage = Usage(
            prompt_tokens=flight.plan.prompt_tokens * outcome.choices,  # as the opening entry
            completion_tokens=self._tokens,
            estimated=True,
        )
        prices = flight.active.policy.prices
        priced = prices.price(outcome.backend, usage, Timings(latency_ms=elapsed_ms))
        self._journal.streamed(
            Streamed(
                outcome.rid,
                self._tokens,
                round(elapsed_ms, 3),
                priced.cost,
                priced.source,
                priced.baseline,
            )
        )

    def stop(self) -> None:
        """No line later (the stream ended, or one is being written now)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

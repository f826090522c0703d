"""A streamed answer as the pipeline hands it to the edge: its events (chunks, then the end or
the break) and its one accounting when it ends, however it ends (``Flight.settle``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from adapters.base import ChatRequest, Chunk, Completion, merge_thinking
from adapters.errors import BackendError
from gateway.pipeline.answers import Broke, Ended, StreamEvent
from gateway.pipeline.flight import Flight
from gateway.pipeline.progress import Progress
from gateway.routing.choices import extra_requests, extra_stream, merged
from gateway.routing.opened import Opened
from gateway.routing.tally import Tally


class Stream:
    """A streamed answer whose first chunk has arrived. ``events`` yields ``(choice, chunk)``
    pairs, then ``Ended`` or ``Broke``; ``close`` must be awaited however the response ends."""

    def __init__(self, flight: Flight, opened: Opened, chat: ChatRequest) -> None:
        self.receipt = flight.receipt(served=True)
        self.model = flight.outcome.model
        self.prompt_tokens = flight.outcome.prompt_estimate  # the gateway's count, until usage
        self.choices = choices = chat.n
        self._flight = flight
        self._opened = opened
        self._progress: Progress | None = None  # its progress in the journal, once it runs
        timeouts = flight.active.policy.timeouts
        sources = [flight.active.dispatcher.chunks(opened)]
        sources += [
            extra_stream(opened.state, r, timeouts.per_try_s, timeouts.stream_idle_s)
            for r in extra_requests(chat, choices - 1)
        ]
        self.events = self._events(merged(sources))

    async def close(self) -> None:
        """Release the backend and, if the stream did not reach its end (the client left, the
        server ended it as it shut down: ``Halt``), account for it as it stands, what the
        backend had sent counted."""
        await self.events.aclose()
        if self._progress is not None:
            self._progress.stop()
        await self._opened.release()
        self._flight.halted()
        self._flight.settle()

    async def _events(
        self, chunks: AsyncGenerator[tuple[int, Chunk], None]
    ) -> AsyncGenerator[StreamEvent, None]:
        outcome = self._flight.outcome
        tally = Tally(self.choices, outcome.prompt_estimate, outcome.started)
        outcome.status = 499  # until the stream completes: the client went away
        # The output sent so far goes to the journal as it goes (coalesced): a process killed
        # mid-stream leaves a row that bills it, not the prompt alone.
        self._progress = progress = Progress.of(self._flight, tally)
        try:
            async for item in chunks:
                sent = tally.add(*item)
                if sent:
                    outcome.chunks += sent
                    if progress is not None:
                        progress.sent(sent)
                if tally.timings is not None:
                    outcome.timings = tally.timings
                yield item
        except BackendError as exc:
            outcome.status, outcome.error = 502, type(exc).__name__
            if outcome.chunks:  # what came before the break was generated, and is billed
                outcome.usage = tally.usage()
            self._flight.settle()
            await self._flight.durable()
            yield Broke(self._flight.public(exc))
            return
        except BaseException:  # cut short (closed: the client went away; or cancelled)
            outcome.usage = tally.usage()  # what the backend had sent so far, counted
            raise
        if progress is not None:
            progress.stop()
        outcome.usage, outcome.timings = tally.usage(), tally.final_timings()
        yield Ended(tuple(tally.finish), outcome.usage, tuple(tally.stop_sequences))
        # The end's events are out; recorded before the stream's last byte, so a report asked
        # for right after sees this request.
        outcome.status = 200
        text = "".join(tally.texts)
        answer = Completion(
            text,
            tally.finish[0],
            outcome.usage,
            outcome.timings,
            outcome.backend,
            outcome.model,
            stop_sequence=tally.stop_sequences[0],
            thinking=merge_thinking(tally.thinking),
        )
        self._flight.succeed(answer)
        await self._flight.durable()  # the row is on disk before the stream's last byte

"""Driving an event shape (Anthropic's Messages events, OpenAI's Responses events) from the
pipeline's stream, or from a whole answer the cache gave to a streamed request. Each wire's
module supplies the shape; the order of events it is fed is the same for both."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Protocol

from adapters.base import FinishReason, ThinkingBlock, ToolCallDelta, Usage
from gateway.http.drain import SHUTTING_DOWN
from gateway.pipeline import Answer, Broke, Ended, Stream


class Shape(Protocol):
    def start(self) -> bytes: ...
    def text(self, delta: str) -> bytes: ...
    def thinking(self, pieces: Iterable[ThinkingBlock]) -> bytes: ...
    def tool_calls(self, deltas: Iterable[ToolCallDelta]) -> bytes: ...
    def end(self, reason: FinishReason, usage: Usage, stop_sequence: str | None) -> bytes: ...
    def error(self, message: str) -> bytes: ...
    def shutting_down(self, message: str) -> bytes: ...


def broken_message(backend_error: str) -> str:
    """What a client is told when the backend failed mid-stream (every wire format)."""
    return (
        f"the backend failed after the stream started ({backend_error}); the answer above is "
        f"incomplete and was not retried, since the client already had part of it"
    )


async def streamed(stream: Stream, shape: Shape) -> AsyncGenerator[bytes, None]:
    """The stream's events in ``shape``. These APIs have no ``n``: only the first choice is
    ever asked for."""
    yield shape.start()
    async for event in stream.events:
        if isinstance(event, tuple):
            index, chunk = event
            if index:
                continue
            thought = shape.thinking(chunk.thinking) if chunk.thinking else b""
            if thought:  # the Responses shape shows no thinking: nothing to send
                yield thought
            if chunk.tool_calls:
                yield shape.tool_calls(chunk.tool_calls)
            if chunk.delta:
                yield shape.text(chunk.delta)
        elif isinstance(event, Ended):
            stop = event.stop_sequences[0] if event.stop_sequences else None
            yield shape.end(event.finish[0], event.usage, stop)
        elif isinstance(event, Broke):
            yield shape.error(broken_message(event.message))


def stopped(shape: Shape) -> Callable[[], bytes]:
    """The last event of a stream the server ends as it shuts down (``EventStreamResponse``'s
    ``on_stop``), in ``shape``'s words."""
    return lambda: shape.shutting_down(SHUTTING_DOWN)


def whole_as_events(answer: Answer, shape: Shape) -> bytes:
    """A whole answer (from the response cache) as the events of a stream, in one body."""
    completion = answer.completion
    parts = [shape.start()]
    if completion.thinking:
        parts.append(shape.thinking(completion.thinking))
    if completion.text:
        parts.append(shape.text(completion.text))
    if completion.tool_calls:
        parts.append(
            shape.tool_calls(
                ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(completion.tool_calls)
            )
        )
    parts.append(shape.end(completion.finish_reason, completion.usage, completion.stop_sequence))
    return b"".join(parts)

"""``/v1/chat/completions`` and ``/v1/completions``: parse the OpenAI body, hand it to the
pipeline, and render its answer (whole, or as server-sent events) with the receipt's headers."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response

from adapters.base import ChatRequest
from gateway.http.disconnect import unless_gone
from gateway.http.drain import SHUTTING_DOWN
from gateway.http.errors import refused_response
from gateway.http.openai_in import parse_chat, parse_completion
from gateway.http.openai_out import DONE, Kind, Shape, error_event
from gateway.http.openai_requests import chat_request, completion_request
from gateway.http.receipt import receipt_headers
from gateway.http.sse import EventStreamResponse
from gateway.http.stopping import stop_of
from gateway.http.typed_events import broken_message
from gateway.http.wire_names import COMPLETIONS, in_words_of
from gateway.pipeline import Answer, Broke, Ended, Inbound, Pipeline, Refused, Stream
from gateway.routing.plan import check_message_count


async def chat_completions(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_chat(await request.body())
    limits = _pipeline(request).runtime.active.policy.limits
    check_message_count(len(body.messages), limits.max_messages, "messages")
    chat = chat_request(body, limits.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    stream = bool(body.stream)
    return await _serve(request, chat, body.model, stream, include_usage, "chat", arrived)


async def completions(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_completion(await request.body())
    limits = _pipeline(request).runtime.active.policy.limits
    chat = completion_request(body, limits.max_tokens)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    stream = bool(body.stream)
    return await _serve(request, chat, body.model, stream, include_usage, "completion", arrived)


async def _serve(
    request: Request,
    chat: ChatRequest,
    model: str | None,
    stream: bool,
    include_usage: bool,
    kind: Kind,
    arrived: float,
) -> Response:
    inbound = Inbound(
        chat=chat,
        model=model,
        stream=stream,
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        grant=request.scope.get("state", {}).get("grant"),
        headers=request.headers,
        arrived=arrived,
        api="chat" if kind == "chat" else "completions",
        halt=stop_of(request.scope).halt,
    )
    try:
        result = await unless_gone(request.receive, _pipeline(request).handle(inbound))
    except Refused as refused:
        if kind == "completion":
            # The pipeline speaks of `messages`; this endpoint's client sent a `prompt`.
            in_words_of(refused.error, COMPLETIONS)
        return refused_response(refused)
    headers = receipt_headers(result.receipt)
    if isinstance(result, Stream):
        headers["cache-control"] = "no-cache"
        shape = _shape(kind, result.receipt.request_id, result.model)
        events = _events(result, shape, include_usage)
        return EventStreamResponse(
            events,
            headers=headers,
            on_close=result.close,
            on_stop=_stopped,
        )
    shape = _shape(kind, result.receipt.request_id, result.completion.model)
    if not stream:
        return Response(
            shape.whole(result.completion, result.more),
            media_type="application/json",
            headers=headers,
        )
    # A streamed request answered whole (from the response cache): its events in one body.
    headers["cache-control"] = "no-cache"
    return Response(
        _whole_as_events(result, shape, include_usage),
        media_type="text/event-stream",
        headers=headers,
    )


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _shape(kind: Kind, rid: str, model: str) -> Shape:
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    return Shape(kind, prefix + rid, int(time.time()), model)


async def _events(stream: Stream, shape: Shape, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The stream's events in OpenAI's SSE shape, ``data: [DONE]`` last."""
    for index in range(stream.choices):
        opening = shape.first(include_usage, index)
        if opening:
            yield opening
    ended = False
    async for event in stream.events:
        if isinstance(event, tuple):
            index, chunk = event
            reasoning = "".join(piece.thinking for piece in chunk.thinking)
            if reasoning and shape.kind == "chat":
                yield shape.reasoning(reasoning, include_usage, index)
            if chunk.tool_calls:
                yield shape.tool_calls(chunk.tool_calls, include_usage, index)
            if chunk.delta:
                yield shape.delta(chunk.delta, include_usage, chunk.logprobs, index)
        elif isinstance(event, Ended):
            ended = True
            for index, reason in enumerate(event.finish):
                yield shape.finish(reason, include_usage, index)
            if include_usage:
                yield shape.usage(event.usage)
        elif isinstance(event, Broke):
            yield error_event(broken_message(event.message), "upstream_error", "stream_interrupted")
    if ended:
        yield DONE


def _stopped() -> bytes:
    """The last event of a stream the server ends as it shuts down: OpenAI's error chunk."""
    return error_event(SHUTTING_DOWN, "service_unavailable", "server_shutting_down")


def _whole_as_events(answer: Answer, shape: Shape, include_usage: bool) -> bytes:
    completion = answer.completion
    parts = [shape.first(include_usage)]
    if completion.reasoning:
        parts.append(shape.reasoning(completion.reasoning, include_usage))
    parts.append(shape.delta(completion.text, include_usage))
    parts.append(shape.finish(completion.finish_reason, include_usage))
    if include_usage:
        parts.append(shape.usage(completion.usage))
    parts.append(DONE)
    return b"".join(p for p in parts if p)

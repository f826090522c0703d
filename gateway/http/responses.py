"""``POST /v1/responses``: OpenAI's Responses API (stateless) as a front door onto the same
pipeline as chat, answered as a ``response`` object or its typed event stream."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response

from adapters.base import ToolCallDelta
from gateway.errors import BadRequest
from gateway.http.errors import refused_response
from gateway.http.receipt import receipt_headers
from gateway.http.responses_in import chat_request, parse_responses
from gateway.http.responses_out import Envelope, EventStream, response_id, whole
from gateway.http.sse import EventStreamResponse
from gateway.pipeline import Answer, Broke, Ended, Inbound, Pipeline, Refused, Stream


async def responses(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_responses(await request.body())
    pipeline: Pipeline = request.app.state.pipeline
    limits = pipeline.runtime.active.policy.limits
    if isinstance(body.input, list) and len(body.input) > limits.max_messages:
        raise BadRequest(
            f"input: {len(body.input)} items is above this gateway's limit of "
            f"{limits.max_messages}",
            param="input",
            code="too_many_messages",
        )
    inbound = Inbound(
        chat=chat_request(body, limits.max_tokens),
        model=body.model,
        stream=bool(body.stream),
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        headers=request.headers,
        arrived=arrived,
        api="responses",
    )
    try:
        result = await pipeline.handle(inbound)
    except Refused as refused:
        if refused.error.param == "messages":
            refused.error.param = "input"  # the pipeline speaks of messages; this client sent input
        return refused_response(refused, request.url.path)
    headers = receipt_headers(result.receipt)
    resp_id = response_id(result.receipt.request_id)
    if isinstance(result, Stream):
        headers["cache-control"] = "no-cache"
        shape = EventStream(Envelope(resp_id, result.model))
        return EventStreamResponse(_events(result, shape), headers=headers, on_close=result.close)
    envelope = Envelope(resp_id, result.completion.model)
    if not body.stream:
        return Response(
            whole(result.completion, envelope), media_type="application/json", headers=headers
        )
    headers["cache-control"] = "no-cache"  # answered whole (from the cache): its events at once
    return Response(
        _whole_as_events(result, envelope), media_type="text/event-stream", headers=headers
    )


async def _events(stream: Stream, shape: EventStream) -> AsyncGenerator[bytes, None]:
    yield shape.start()
    async for event in stream.events:
        if isinstance(event, tuple):
            index, chunk = event
            if index:
                continue  # the Responses API has no n: only the first choice is asked for
            if chunk.tool_calls:
                yield shape.tool_calls(chunk.tool_calls)
            if chunk.delta:
                yield shape.text(chunk.delta)
        elif isinstance(event, Ended):
            yield shape.end(event.finish[0], event.usage)
        elif isinstance(event, Broke):
            yield shape.error(
                f"the backend failed after the stream started ({event.message}); the answer "
                f"above is incomplete and was not retried, since the client already had part of it"
            )


def _whole_as_events(answer: Answer, envelope: Envelope) -> bytes:
    completion = answer.completion
    shape = EventStream(envelope)
    parts = [shape.start()]
    if completion.text:
        parts.append(shape.text(completion.text))
    if completion.tool_calls:
        parts.append(
            shape.tool_calls(
                ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(completion.tool_calls)
            )
        )
    parts.append(shape.end(completion.finish_reason, completion.usage))
    return b"".join(parts)

"""``POST /v1/responses``: OpenAI's Responses API (stateless) as a front door onto the same
pipeline as chat, answered as a ``response`` object or its typed event stream."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from gateway.http.disconnect import unless_gone
from gateway.http.errors import refused_response
from gateway.http.receipt import receipt_headers
from gateway.http.responses_in import chat_request, echoed, parse_responses
from gateway.http.responses_out import Envelope, EventStream, response_id, whole
from gateway.http.sse import EventStreamResponse
from gateway.http.stopping import stop_of
from gateway.http.typed_events import stopped, streamed, whole_as_events
from gateway.http.wire_names import RESPONSES, in_words_of
from gateway.pipeline import Inbound, Pipeline, Refused, Stream
from gateway.routing.plan import check_message_count


async def responses(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_responses(await request.body())
    pipeline: Pipeline = request.app.state.pipeline
    limits = pipeline.runtime.active.policy.limits
    if isinstance(body.input, list):
        check_message_count(len(body.input), limits.max_messages, "input", "items")
    inbound = Inbound(
        chat=chat_request(body, limits.max_tokens),
        model=body.model,
        stream=bool(body.stream),
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        grant=request.scope.get("state", {}).get("grant"),
        headers=request.headers,
        arrived=arrived,
        api="responses",
        halt=stop_of(request.scope).halt,
    )
    try:
        result = await unless_gone(request.receive, pipeline.handle(inbound))
    except Refused as refused:
        in_words_of(refused.error, RESPONSES)  # the pipeline speaks of messages, max_tokens…
        return refused_response(refused, request.url.path)
    headers = receipt_headers(result.receipt)
    resp_id = response_id(result.receipt.request_id)
    if isinstance(result, Stream):
        headers["cache-control"] = "no-cache"
        shape = EventStream(Envelope(resp_id, result.model, echoed(body)))
        return EventStreamResponse(
            streamed(result, shape),
            headers=headers,
            on_close=result.close,
            on_stop=stopped(shape),
        )
    envelope = Envelope(resp_id, result.completion.model, echoed(body))
    if not body.stream:
        return Response(
            whole(result.completion, envelope), media_type="application/json", headers=headers
        )
    headers["cache-control"] = "no-cache"  # answered whole (from the cache): its events at once
    return Response(
        whole_as_events(result, EventStream(envelope)),
        media_type="text/event-stream",
        headers=headers,
    )

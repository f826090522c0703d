"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API as a front
door onto the same pipeline as chat (scored, routed to any backend, cached, priced, one ledger
row), answered in Anthropic's shapes: the message, its event stream, its errors."""

from __future__ import annotations

import json
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from adapters.base import ChatRequest, Usage
from gateway.http.anthropic_in import (
    CountTokensIn,
    chat_request,
    parse_count_tokens,
    parse_messages,
)
from gateway.http.anthropic_out import EventStream, message_id, whole
from gateway.http.disconnect import unless_gone
from gateway.http.errors import refused_response
from gateway.http.receipt import receipt_headers
from gateway.http.sse import EventStreamResponse
from gateway.http.stopping import stop_of
from gateway.http.typed_events import stopped, streamed, whole_as_events
from gateway.http.wire_names import MESSAGES, in_words_of
from gateway.pipeline import Answer, Inbound, Pipeline, Refused, Stream
from gateway.pipeline.refusing import check_model
from gateway.routing.plan import check_message_count
from gateway.scoring.tokens import count_exact


async def messages(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_messages(await request.body())
    pipeline = _pipeline(request)
    chat = _chat(pipeline, body)
    inbound = Inbound(
        chat=chat,
        model=body.model,
        stream=bool(body.stream),
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        grant=request.scope.get("state", {}).get("grant"),
        headers=request.headers,
        arrived=arrived,
        api="messages",
        halt=stop_of(request.scope).halt,
    )
    try:
        result = await unless_gone(request.receive, pipeline.handle(inbound))
    except Refused as refused:
        in_words_of(refused.error, MESSAGES)  # the pipeline speaks of response_format
        return refused_response(refused, request.url.path)
    headers = receipt_headers(result.receipt)
    msg_id = message_id(result.receipt.request_id)
    # As Anthropic's API: thinking blocks only when asked for (a local model may think unasked).
    shows = chat.thinking is not None and chat.thinking.on
    if isinstance(result, Stream):
        headers["cache-control"] = "no-cache"
        estimate = Usage(prompt_tokens=result.prompt_tokens, estimated=True)
        shape = EventStream(msg_id, result.model, estimate, shows)
        return EventStreamResponse(
            streamed(result, shape),
            headers=headers,
            on_close=result.close,
            on_stop=stopped(shape),
        )
    completion = result.completion
    if not body.stream:
        return Response(
            whole(completion, msg_id, completion.model, shows_thinking=shows),
            media_type="application/json",
            headers=headers,
        )
    # A streamed request answered whole (from the response cache): its events in one body.
    headers["cache-control"] = "no-cache"
    return Response(
        whole_as_events(result, _whole_shape(result, msg_id, shows)),
        media_type="text/event-stream",
        headers=headers,
    )


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as tiergate counts them (the tokenizer its router uses: an estimate
    of what the backend that answers will count). A ``model`` that ``/v1/messages`` would
    refuse for this key (unknown, or a route the key may not use) is refused in its words."""
    body = parse_count_tokens(await request.body())
    pipeline = _pipeline(request)
    chat = _chat(pipeline, body)
    grant = request.scope.get("state", {}).get("grant")
    try:
        check_model(pipeline.runtime.active.policy, body.model, grant)
    except Refused as refused:
        return refused_response(refused, request.url.path)
    return Response(orjson.dumps({"input_tokens": _count(chat)}), media_type="application/json")


def _chat(pipeline: Pipeline, body: CountTokensIn) -> ChatRequest:
    limits = pipeline.runtime.active.policy.limits
    check_message_count(len(body.messages), limits.max_messages, "messages")
    return chat_request(body, limits.max_tokens)


def _count(chat: ChatRequest) -> int:
    total = 0
    for message in chat.messages:
        total += count_exact(message.content) + 4  # the turn's role and separators
        for call in message.tool_calls:
            total += count_exact(call.name) + count_exact(call.arguments)
    for tool in chat.tools:
        # The standard library's json: a schema may hold integers past 64 bits (orjson's limit).
        total += count_exact(tool.name) + count_exact(json.dumps(tool.parameters))
        total += count_exact(tool.description or "")
    return total


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _whole_shape(answer: Answer, msg_id: str, shows_thinking: bool) -> EventStream:
    completion = answer.completion
    return EventStream(msg_id, completion.model, completion.usage, shows_thinking)

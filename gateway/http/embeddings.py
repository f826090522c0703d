"""``/v1/embeddings``: parse the OpenAI body, embed through the pipeline, and answer with
OpenAI's list of vectors and the receipt's headers."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from gateway.http.disconnect import unless_gone
from gateway.http.errors import refused_response
from gateway.http.openai_in import parse_embedding
from gateway.http.openai_out import embeddings_json
from gateway.http.openai_requests import embedding_request
from gateway.http.receipt import receipt_headers
from gateway.http.stopping import stop_of
from gateway.pipeline import Pipeline, Refused


async def embeddings(request: Request) -> Response:
    arrived = time.perf_counter()  # the deadline counts from here
    body = parse_embedding(await request.body())
    embed = embedding_request(body)
    pipeline: Pipeline = request.app.state.pipeline
    state = request.scope.get("state", {})
    try:
        embedded = pipeline.embed(
            embed,
            body.model,
            state.get("key_id", "-"),
            arrived,
            state.get("grant"),
            stop_of(request.scope).halt,
        )
        served = await unless_gone(request.receive, embedded)
    except Refused as refused:
        return refused_response(refused)
    result = served.embeddings
    payload = embeddings_json(result, result.model, body.encoding_format)
    return Response(payload, media_type="application/json", headers=receipt_headers(served.receipt))

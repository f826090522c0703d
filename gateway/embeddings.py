"""The ``/v1/embeddings`` request path: plan (embedding-capable backends of the route) →
dispatch (with fallback) → OpenAI-shaped list of vectors, with headers, metrics, log line and a
ledger row priced like chat (input tokens; no chat baseline to compare with)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounting import Accountant, Outcome
from gateway.dispatch import DispatchError
from gateway.errors import BadRequest, GatewayError
from gateway.ids import request_id
from gateway.openai_schema import EmbeddingIn, embedding_request
from gateway.policy import UnknownRoute
from gateway.pricing import Priced
from gateway.responses import embeddings_json
from gateway.router import plan_embeddings
from gateway.runtime import Runtime
from gateway.serving import _cost_headers, _dispatch_failed, _served_by
from gateway.tokens import count_exact


async def serve_embeddings(request: Request, body: EmbeddingIn) -> Response:
    runtime: Runtime = request.app.state.runtime
    accountant: Accountant = request.app.state.accountant
    active = runtime.active
    rid = request_id()
    headers = {"x-request-id": rid, "x-tiergate-policy": active.policy.hash}
    outcome = Outcome(
        rid=rid,
        ts=datetime.now(UTC),
        started=time.perf_counter(),
        key_id=request.scope.get("state", {}).get("key_id", "-"),
        policy_hash=active.policy.hash,
        stream=False,
    )
    try:
        embed = embedding_request(body)
        tokens = sum(count_exact(text) for text in embed.inputs)
        plan = plan_embeddings(active.policy, active.pool.capabilities, body.model, tokens)
    except UnknownRoute as exc:
        raise BadRequest(str(exc), param="model", code="model_not_found", headers=headers) from None
    except GatewayError as exc:
        exc.headers.update(headers)
        raise
    outcome.route, outcome.tier = plan.decision.route, plan.decision.tier
    outcome.prompt_estimate = tokens
    headers["x-tiergate-route"] = plan.decision.route
    prices = active.policy.prices
    try:
        served = await active.dispatcher.embed(plan.decision, embed)
    except DispatchError as exc:
        raise _dispatch_failed(outcome, exc, headers, accountant, plan, prices) from None
    outcome.trace = served.trace
    _served_by(outcome, headers, served.candidate)
    result = served.embeddings
    outcome.model = result.model
    outcome.usage, outcome.timings = result.usage, result.timings
    priced = outcome.price(prices, plan)
    # The baseline is a chat model: its price says nothing about what an embedding would cost.
    outcome.priced = Priced(priced.cost, priced.source, None)
    _cost_headers(headers, outcome.priced)
    accountant.finish(outcome, plan, prices)
    payload = embeddings_json(result, result.model, body.encoding_format)
    return Response(payload, media_type="application/json", headers=headers)

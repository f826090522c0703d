"""The ASGI application: the routes, the error handlers and the middleware around them, and a
lifespan that opens the process's services and keeps them on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from gateway.cache.service import CacheService
from gateway.canary.controller import CanaryController
from gateway.errors import GatewayError
from gateway.governance.book import KeyBook
from gateway.governance.gate import Governor
from gateway.governance.rates import RateLimiter
from gateway.http import admin, canary, dashboard, feedback, model_list, ops
from gateway.http import keys as key_routes
from gateway.http.admin import Peers
from gateway.http.chat import chat_completions, completions
from gateway.http.disconnect import ClientGone
from gateway.http.drain import Drain
from gateway.http.embeddings import embeddings
from gateway.http.errors import (
    on_client_gone,
    on_client_left,
    on_gateway_error,
    on_http_error,
    on_refused,
    on_unexpected,
    on_validation_error,
)
from gateway.http.messages import count_tokens, messages
from gateway.http.middleware import ApiKeys, BodyLimit
from gateway.http.openapi import openapi_with_hot_routes
from gateway.http.request_ids import RequestIds
from gateway.http.responses import responses
from gateway.http.stopping import Stopping
from gateway.http.traced import Traced
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline, Refused
from gateway.routing.accounting import Accountant
from gateway.routing.runtime import Runtime
from gateway.settings import Settings
from gateway.tracing import Tracing

# The hot routes are plain Starlette routes: they parse their own body, so FastAPI's dependency
# machinery would only add time to every request (~15% of the gateway's CPU in the overhead
# benchmark).
HOT_ROUTES = (
    ("/v1/chat/completions", chat_completions),
    ("/v1/completions", completions),
    ("/v1/embeddings", embeddings),
    ("/v1/messages", messages),
    ("/v1/messages/count_tokens", count_tokens),
    ("/v1/responses", responses),
)


class Services(Protocol):
    """What the endpoints reach through ``request.app.state`` (``gateway.app.Services``)."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def ledger(self) -> LedgerWriter | None: ...
    @property
    def accountant(self) -> Accountant: ...
    @property
    def cache(self) -> CacheService: ...
    @property
    def canary(self) -> CanaryController: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def keys(self) -> KeyBook: ...
    @property
    def governor(self) -> Governor: ...
    @property
    def feedback_rates(self) -> RateLimiter: ...

    async def aclose(self) -> None: ...


def asgi_app(
    settings: Settings,
    keys: KeyBook,
    open_services: Callable[[], Awaitable[Services]],
    tracing: Tracing | None = None,
    peers: Peers | None = None,
) -> FastAPI:
    """``peers``: the other workers of ``serve --workers N``, which the admin reload reaches
    too."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services()
        state = app.state
        state.metrics, state.runtime, state.ledger = (
            services.metrics,
            services.runtime,
            services.ledger,
        )
        state.accountant, state.cache, state.canary = (
            services.accountant,
            services.cache,
            services.canary,
        )
        state.pipeline = services.pipeline
        state.keys, state.governor = services.keys, services.governor
        state.feedback_rates = services.feedback_rates
        state.peers = peers
        if peers is not None:
            peers.attach(services.runtime)
        try:
            yield
        finally:
            if peers is not None:
                peers.detach()
            await services.aclose()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # the last spans, exported

    app = FastAPI(
        title="tiergate",
        summary="A cost-and-quality routing gateway for LLM traffic (OpenAI-compatible).",
        lifespan=lifespan,
        # Their scripts come from a CDN: blank pages offline, so off unless asked for.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.state.drain = drain = Drain()  # SIGTERM's drain, as requests watch it (gateway.server)
    for path, endpoint in HOT_ROUTES:
        app.add_route(path, endpoint, methods=["POST"])
    for module in (model_list, ops, admin, key_routes, dashboard, canary, feedback):
        app.include_router(module.router)
    app.openapi = openapi_with_hot_routes(app)  # type: ignore[method-assign]
    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(ClientGone, on_client_left)
    app.add_exception_handler(Exception, on_unexpected)
    # Innermost first. A request the drain stops is answered inside the others (its trace
    # span and log line see the 503); the size limit applies before anything reads the body.
    app.add_middleware(Stopping, drain=drain)
    app.add_middleware(ApiKeys, book=keys, ops_port=settings.ops_port, open_ops=settings.open_ops)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # Around both: their refusals get a request id too (and Anthropic's name for it).
    app.add_middleware(RequestIds)
    if tracing is not None:  # outermost: a refused request has its span too
        paths = {getattr(route, "path", "") for route in app.routes}
        app.add_middleware(Traced, tracing=tracing, paths=paths)
    return app

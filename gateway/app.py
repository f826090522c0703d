"""``create_app(settings)``: the FastAPI application. Nothing happens at import time; the
lifespan loads the policy, builds the backends, and closes them on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from adapters import load_backend
from gateway.accounting import Accountant
from gateway.cache.service import CacheService
from gateway.cache.store import MemoryStore, RedisStore, Store
from gateway.canary.controller import CanaryController
from gateway.canary.metrics import CanaryMetrics
from gateway.canary.routes import router as canary_router
from gateway.dashboard import router as dashboard_router
from gateway.errors import GatewayError, error_response
from gateway.feedback import router as feedback_router
from gateway.ids import request_id
from gateway.ledger.db import ensure_schema, make_engine
from gateway.ledger.outbox import Outbox
from gateway.ledger.writer import LedgerWriter
from gateway.log import configure_logging
from gateway.metrics import Metrics
from gateway.middleware import ApiKeys, BodyLimit
from gateway.pool import BackendFactory
from gateway.routes import HOT_ROUTES, router
from gateway.runtime import Runtime
from gateway.settings import Settings, check_exposure
from gateway.tokens import warm_up

log = structlog.get_logger("tiergate.app")

# A ledger insert that takes longer than this fails, and its rows go to the outbox.
WRITER_STATEMENT_TIMEOUT_MS = 15_000


def create_app(
    settings: Settings,
    *,
    backend_factory: BackendFactory = load_backend,
    configure_logs: bool = True,
) -> FastAPI:
    """Build the gateway. ``backend_factory`` lets tests put shipped fakes behind any name."""
    check_exposure(settings)
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format, settings.secrets())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        runtime = Runtime(settings.policy, metrics, factory=backend_factory)
        ledger = await open_ledger(settings, metrics) if settings.ledger else None
        await asyncio.to_thread(warm_up)
        app.state.metrics = metrics
        app.state.runtime = runtime
        app.state.ledger = ledger
        app.state.accountant = Accountant(metrics, ledger)
        app.state.cache = CacheService(open_store(settings), metrics)
        app.state.canary = CanaryController(
            runtime,
            CanaryMetrics(metrics.registry),
            engine=ledger.engine if ledger else None,
            record=ledger.record if ledger else None,
            flush=ledger.flush if ledger else None,
        )
        runtime.start(watch=settings.watch_policy)
        await app.state.canary.start()
        _install_sighup(runtime)
        if not settings.client_keys():
            log.warning(
                "no_api_keys",
                detail=f"no API keys configured: serving on {settings.host} (loopback) only, "
                "every route open. Set TIERGATE_API_KEYS to require keys.",
            )
        log.info("gateway_started", policy=runtime.active.policy.hash, host=settings.host)
        try:
            yield
        finally:
            _remove_sighup()
            await app.state.canary.aclose()
            if ledger is not None:
                await ledger.aclose()  # after the server drained its requests: rows written
            await app.state.cache.aclose()
            await runtime.aclose()
            metrics.close()
            log.info("gateway_stopped")

    app = FastAPI(
        title="tiergate",
        summary="A cost-and-quality routing gateway for LLM traffic (OpenAI-compatible).",
        lifespan=lifespan,
    )
    for path, endpoint in HOT_ROUTES:
        app.add_route(path, endpoint, methods=["POST"])
    app.include_router(router)
    app.include_router(dashboard_router)
    app.include_router(canary_router)
    app.include_router(feedback_router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    # Outermost first: the size limit applies before anything reads the body.
    app.add_middleware(
        ApiKeys,
        client_keys=settings.client_keys(),
        admin_key=settings.admin_key.get_secret_value() if settings.admin_key else None,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


async def open_ledger(settings: Settings, metrics: Metrics) -> LedgerWriter:
    """The ledger's engine (schema checked or, for the embedded SQLite, upgraded) and writer."""
    url = settings.ledger_url()
    engine = make_engine(url, statement_timeout_ms=WRITER_STATEMENT_TIMEOUT_MS)
    try:
        await asyncio.to_thread(ensure_schema, url, engine)
    except OperationalError as exc:
        # Unreachable now: serve anyway, rows go to the outbox until the database answers.
        log.error(
            "ledger_db_unreachable",
            error=str(exc).splitlines()[0][:300],
            detail="starting anyway; ledger rows go to the local outbox",
        )
    outbox = await asyncio.to_thread(Outbox, settings.outbox_path)
    writer = LedgerWriter(engine, outbox, metrics)
    writer.start()
    if outbox.size:
        log.warning("ledger_outbox_pending", rows=outbox.size, path=str(outbox.path))
    return writer


def open_store(settings: Settings) -> Store:
    """Redis when TIERGATE_REDIS_URL is set, else the in-process store."""
    if settings.redis_url is None:
        return MemoryStore()
    return RedisStore(
        settings.redis_url.get_secret_value(), timeout_s=settings.redis_timeout_ms / 1000.0
    )


def _install_sighup(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()

    def on_sighup() -> None:
        runtime.spawn(runtime.reload("sighup"), "sighup-reload")

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)


def _remove_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    # Every error gets a request id and, once a policy is active, its hash (errors raised
    # before the request path started carry neither yet).
    extra = {"x-request-id": exc.headers.get("x-request-id") or request_id()}
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        extra["x-tiergate-policy"] = runtime.active.policy.hash
    return exc.response(extra)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return error_response(
        exc.status_code,
        f"{message}: see /docs for the routes tiergate serves",
        type_="invalid_request_error",
        code="not_found" if exc.status_code == 404 else None,
        headers=dict(exc.headers or {}),
    )


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return error_response(
        400, f"{param}: {first.get('msg', 'invalid')}", type_="invalid_request_error", param=param
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return error_response(
        500,
        "internal error in the gateway; the log has the details",
        type_="server_error",
        code="internal_error",
    )


def app_from_env() -> FastAPI:
    """The app built from ``TIERGATE_*`` settings: the factory uvicorn's worker processes
    import (``uvicorn --factory gateway.app:app_from_env``)."""
    return create_app(Settings())

"""Errors rendered in OpenAI's JSON shape (``{"error": {"message", "type", "param",
"code"}}``), with the request's ``x-tiergate-*`` headers, and the app's exception handlers:
nothing that goes wrong reaches a client as a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http.anthropic_out import error_body as anthropic_error_body
from gateway.http.disconnect import ClientGone
from gateway.http.receipt import receipt_headers
from gateway.http.validation import plain_param
from gateway.ids import request_id
from gateway.pipeline import Receipt, Refused

log = structlog.get_logger("tiergate.app")
ANTHROPIC_PREFIX = "/v1/messages"


def error_body(
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    status: int = 400,
    path: str = "",
) -> bytes:
    """The error in the shape of the API its path belongs to: Anthropic's for
    ``/v1/messages``, OpenAI's everywhere else."""
    if path.startswith(ANTHROPIC_PREFIX):
        return anthropic_error_body(status, message)
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    path: str = "",
) -> Response:
    return Response(
        content=error_body(message, type_=type_, param=param, code=code, status=status, path=path),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def gateway_error_response(
    error: GatewayError, headers: Mapping[str, str], path: str = ""
) -> Response:
    extra = dict(headers)
    if error.retry_after:
        extra["retry-after"] = str(max(1, round(error.retry_after)))
    return error_response(
        error.status,
        error.message,
        type_=error.type,
        param=error.param,
        code=error.code,
        headers=extra,
        path=path,
    )


def refused_response(refused: Refused, path: str = "") -> Response:
    """A request the pipeline could not answer, with what it did with it."""
    return gateway_error_response(refused.error, receipt_headers(refused.receipt), path)


async def on_gateway_error(request: Request, exc: Exception) -> Response:
    """A ``GatewayError`` raised at the edge (before the pipeline had the request): it still
    gets a request id and, once a policy is active, the policy's hash."""
    assert isinstance(exc, GatewayError)
    runtime = getattr(request.app.state, "runtime", None)
    policy = runtime.active.policy.hash if runtime is not None else None
    headers = {"x-request-id": request_id()}
    if policy is not None:
        headers = receipt_headers(Receipt(request_id=headers["x-request-id"], policy=policy))
    return gateway_error_response(exc, headers, request.url.path)


async def on_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return refused_response(exc, request.url.path)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return error_response(
        exc.status_code,
        f"{message}: see /docs for the routes tiergate serves",
        type_="invalid_request_error",
        code="not_found" if exc.status_code == 404 else None,
        headers=dict(exc.headers or {}),
        path=request.url.path,
    )


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
    param = plain_param(tuple(first.get("loc", ())[1:]))  # [0] is body, query or path
    return error_response(
        400,
        f"{param}: {first.get('msg', 'invalid')}",
        type_="invalid_request_error",
        param=param,
        path=request.url.path,
    )


async def on_client_gone(request: Request, exc: Exception) -> Response:
    """The client left while sending its request: nothing reached a backend, nobody reads the
    answer. Worth an info line, not an error with a traceback."""
    assert isinstance(exc, ClientDisconnect)
    log.info("client_disconnected", path=request.url.path, detail="left while sending the body")
    return Response(status_code=499)


async def on_client_left(request: Request, exc: Exception) -> Response:
    """The client left before its answer (``gateway.http.disconnect``): the work was cancelled
    and the request's own log line (and ledger row) says 499. Nobody reads this response."""
    assert isinstance(exc, ClientGone)
    return Response(status_code=499)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return error_response(
        500,
        "internal error in the gateway; the log has the details",
        type_="server_error",
        code="internal_error",
        path=request.url.path,
    )

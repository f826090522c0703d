"""How the OpenAI-compatible adapter turns what the ``openai`` SDK (and the httpx or aiohttp
transport under it) raises into ``BackendError``s, and replies we cannot read (``MalformedReply``
from ``adapters.openai_compat.wire``) into ``BackendBadResponse``. The server's own words are
kept, shortened, with the API key taken out.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from adapters.config import OpenAICompatConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    parse_retry_after,
)
from adapters.openai_compat.wire import PREVIEW_CHARS, MalformedReply

if TYPE_CHECKING:
    from openai import APIStatusError


def as_backend_error(
    exc: Exception, *, backend: str, config: OpenAICompatConfig, api_key: str | None
) -> BackendError:
    """The package error for an SDK or transport failure, or an unreadable reply; says what to
    do about it. ``api_key`` is the key sent, if one was set (kept out of every message)."""
    import openai  # loaded already: the backend imported it

    url = config.base_url
    if isinstance(exc, MalformedReply):
        return bad_response(str(exc), backend=backend, config=config, api_key=api_key)
    # Checked first: the aiohttp transport reports a refused connection, and a host name that
    # does not resolve, as a connect *timeout*, which would send ops looking for a slow server
    # instead of a dead one or a wrong name.
    cause = _connect_failure(exc)
    if isinstance(cause, ConnectionRefusedError):
        return BackendUnavailable(
            backend,
            f"server not reachable at {url} (connection refused): start it, or fix "
            f"`base_url` of this backend (e.g. http://127.0.0.1:8080/v1)",
        )
    if isinstance(cause, socket.gaierror):
        return BackendUnavailable(
            backend,
            f"server not reachable at {url} (its host name does not resolve: "
            f"{cause.strerror or cause}): fix the host in `base_url` of this backend, or its "
            f"DNS record",
        )
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return BackendTimeout(
            backend,
            f"no answer from {url} within timeout_s={config.timeout_s}: the model may "
            f"be loading or the answer long; raise `timeout_s` or lower max_tokens",
        )
    if isinstance(exc, openai.APIConnectionError):
        says = _server_says(exc.__cause__ or exc, api_key)
        return BackendUnavailable(
            backend,
            f"server not reachable at {url} ({says}): "
            f"start it, or fix `base_url` of this backend (e.g. http://127.0.0.1:8080/v1)",
        )
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc, backend=backend, config=config, api_key=api_key)
    if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
        return BackendUnavailable(
            backend,
            f"the server at {url} reported an error mid-answer ({_server_says(exc, api_key)}); "
            f"check the server's logs",
        )
    if isinstance(exc, httpx.HTTPError):
        return BackendUnavailable(
            backend,
            f"the connection to {url} broke mid-answer ({type(exc).__name__}): the server "
            f"may have crashed or restarted; check its logs",
        )
    if isinstance(exc, ValueError):
        detail = f"unreadable data ({exc})"
        return bad_response(detail, backend=backend, config=config, api_key=api_key)
    return BackendUnavailable(backend, f"the openai SDK failed talking to {url}: {exc}")


def bad_response(
    what: str, *, backend: str, config: OpenAICompatConfig, api_key: str | None
) -> BackendBadResponse:
    """A reply we cannot read: ``what`` is wrong with it."""
    return BackendBadResponse(
        backend,
        f"{_redact(what, api_key)} from {config.base_url}: check that `base_url` points at "
        f"an OpenAI-compatible API (usually ending in /v1) and that the server is healthy",
    )


def _redact(text: str, api_key: str | None) -> str:
    return text.replace(api_key, "***") if api_key else text


def _server_says(exc: BaseException, api_key: str | None) -> str:
    """The server's own error message (from the OpenAI error body), shortened."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, Mapping) else body
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
    message = " ".join(message.split())
    if len(message) > PREVIEW_CHARS:
        message = message[:PREVIEW_CHARS] + "..."
    return _redact(message, api_key)


def _from_status(
    exc: APIStatusError, *, backend: str, config: OpenAICompatConfig, api_key: str | None
) -> BackendError:
    import openai

    url = config.base_url
    status = exc.status_code
    says = _server_says(exc, api_key)
    if isinstance(exc, openai.RateLimitError):
        headers = exc.response.headers
        retry_after = parse_retry_after(headers.get("retry-after"))
        ms = parse_retry_after(headers.get("retry-after-ms"))
        if ms is not None:
            retry_after = ms / 1000.0
        when = f"after {retry_after:g} s" if retry_after is not None else "later"
        return BackendRateLimited(
            backend,
            f"the server at {url} is rate limiting (HTTP 429: {says}); retry {when}, or "
            f"let the policy fall back to another backend",
            retry_after=retry_after,
            status_code=status,
        )
    if isinstance(exc, openai.NotFoundError):
        return BackendUnavailable(
            backend,
            f"HTTP 404 from {url} ({says}): the model name {config.model!r} may be "
            f"wrong, or `base_url` may lack /v1. List the server's models with "
            f"GET {url}/models (curl {url}/models) and fix `model:` or `base_url:`",
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        hint = _credentials_hint(status, config=config, key_set=api_key is not None)
        return BackendRejected(backend, hint, status_code=status)
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return BackendRejected(
            backend,
            f"the server at {url} refused the request (HTTP {status}: {says}); check the "
            f"prompt length against the model's context, max_tokens and the parameters",
            status_code=status,
        )
    if status == 408:
        return BackendTimeout(backend, f"the server at {url} timed out (HTTP 408: {says})")
    if status >= 500 or status in (409, 425):
        return BackendUnavailable(
            backend,
            f"the server at {url} failed (HTTP {status}: {says}); check its logs, the "
            f"policy may fall back meanwhile",
            status_code=status,
        )
    return BackendRejected(
        backend, f"the server at {url} refused the request (HTTP {status}: {says})", status
    )


def _credentials_hint(status: int, *, config: OpenAICompatConfig, key_set: bool) -> str:
    url, env = config.base_url, config.api_key_env
    refused = f"the server at {url} refused our credentials (HTTP {status})"
    if env is None:
        return (
            f"{refused}: this backend sends no API key; set `api_key_env:` to the name of an "
            f"environment variable holding the server's key"
        )
    if not key_set:
        return f"{refused}: the environment variable {env} is not set; set it to the key"
    return f"{refused}: the key in the environment variable {env} is wrong or lacks access"


def _connect_failure(exc: BaseException) -> OSError | None:
    """A connection refusal or a failed host-name lookup anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError | socket.gaierror):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

"""What a client is told when no backend answered its request: the error class follows the last
real failure (a timeout, a rate limit, garbage, an outage); refusals of the request itself are
the client's 400, refusals of the gateway's own credentials the operator's 502.

Adapters word their errors for the operator: backend addresses and the environment variables to
check. A client sees backend names, error classes and the upstream's own words, with addresses,
file paths and variable names taken out (``public``); the log line ``dispatch_failed`` (with
the request id) keeps the full text."""

from __future__ import annotations

import math
import re

import structlog

from adapters.errors import BackendRateLimited
from gateway.errors import (
    BadGateway,
    BadRequest,
    GatewayError,
    GatewayTimeout,
    ServiceUnavailable,
    TooManyRequests,
)
from gateway.routing.attempts import DispatchError

log = structlog.get_logger("tiergate.dispatch")

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>)\],;]+", re.IGNORECASE)
_HOST_PORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-f:]+\])(?::\d+)?\b")
# A host name with a port (db.internal.example:5432): the last label starts with a letter, so
# model tags (llama3.2:3b, phi3.5:3.8b) are not taken for one.
_NAME_PORT = re.compile(
    r"\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]*:\d{1,5}\b", re.IGNORECASE
)
# An absolute file path (/srv/models/m.gguf, /models/m.gguf): three segments or more, or two
# with a file extension (not an API path such as /api/chat).
_PATH = re.compile(r"(?<![\w/.:\]\[-])(?:/[\w.~+@-]+){2,}")
_ENV_PHRASE = re.compile(r"(?:the )?environment variable `?[A-Za-z_][A-Za-z0-9_]*`?")
_ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def _file_path(match: re.Match[str]) -> str:
    path = match.group(0)
    trailing = len(path) - len(path.rstrip("."))  # a sentence's full stop is not the path's
    path = path[: len(path) - trailing] if trailing else path
    segments = path.split("/")[1:]
    if len(segments) < 3 and "." not in segments[-1]:
        return match.group(0)
    return "[path]" + "." * trailing


def public(message: str) -> str:
    """``message`` without backend addresses, file paths or environment-variable names (for
    clients)."""
    text = _URL.sub("[backend address]", message)
    text = _HOST_PORT.sub("[backend address]", text)
    text = _NAME_PORT.sub("[backend address]", text)
    text = _PATH.sub(_file_path, text)
    text = _ENV_PHRASE.sub("a variable in the gateway's environment", text)
    return _ENV_NAME.sub("[gateway setting]", text)


def client_error(failure: DispatchError, request_id: str) -> GatewayError:
    """What the client is told when no backend answered (the full story goes to the log)."""
    full = failure.describe()
    detail = public(full)
    if detail != full:
        log.warning("dispatch_failed", request_id=request_id, detail=full)
    if not failure.attempts:
        return ServiceUnavailable(
            f"no backend could take this request: {detail}",
            code="no_backend_available",
            retry_after=_first_probe_s(failure),
        )
    refused = sorted({a.backend for a in failure.attempts if a.status in (401, 403)})
    if failure.all_rejected and refused:
        # The gateway's own credentials, not the client's request: the operator's to fix,
        # and the adapters' messages (which name the setting to check) are for the log.
        log.warning("upstream_auth_failed", request_id=request_id, backends=refused, detail=full)
        return BadGateway(
            f"the upstream refused this gateway's own credentials for {', '.join(refused)}; "
            f"the request was fine: the gateway's operator must fix its configuration "
            f"(the gateway's log says which setting)",
            code="upstream_auth_failed",
        )
    if failure.all_rejected:
        return BadRequest(
            f"the backends refused this request: {detail}", code="rejected_by_backend"
        )
    failed = [a for a in failure.attempts if a.error != "BackendRejected"]
    kind = failed[-1].error if failed else None
    message = f"every backend failed: {detail}"
    if kind == "BackendTimeout":
        return GatewayTimeout(message, code="backend_timeout")
    if kind == "BackendRateLimited":
        retry = failure.last.retry_after if isinstance(failure.last, BackendRateLimited) else None
        return TooManyRequests(message, code="backend_rate_limited", retry_after=retry)
    if kind == "BackendBadResponse":
        return BadGateway(message, code="bad_backend_response")
    # Down (an outage, an upstream 5xx with no Retry-After of its own) with the other
    # candidates skipped behind open breakers: the first probe is still the earliest moment a
    # retry can be answered by more than the backend that just failed.
    return ServiceUnavailable(
        message, code="backend_unavailable", retry_after=_first_probe_s(failure)
    )


def _first_probe_s(failure: DispatchError) -> int | None:
    """Whole seconds until the first skipped backend may be tried again (the client's
    ``Retry-After``, so an SDK's retry does not arrive while every breaker is still open), or
    None when no skip says."""
    known = [s.retry_in_s for s in failure.skipped if s.retry_in_s is not None]
    return max(1, math.ceil(min(known))) if known else None

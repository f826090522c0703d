"""What a client is told when no backend answered its request: the error class follows the last
real failure (a timeout, a rate limit, garbage, an outage); refusals of the request itself are
the client's 400, refusals of the gateway's own credentials the operator's 502."""

from __future__ import annotations

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
from gateway.routing.dispatch import DispatchError

log = structlog.get_logger("tiergate.dispatch")


def client_error(failure: DispatchError) -> GatewayError:
    """What the client is told when no backend answered."""
    detail = failure.describe()
    if not failure.attempts:
        return ServiceUnavailable(
            f"no backend could take this request: {detail}", code="no_backend_available"
        )
    refused = sorted({a.backend for a in failure.attempts if a.status in (401, 403)})
    if failure.all_rejected and refused:
        # The gateway's own credentials, not the client's request: the operator's to fix,
        # and the adapters' messages (which name the setting to check) are for the log.
        log.warning("upstream_auth_failed", backends=refused, detail=detail)
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
    return ServiceUnavailable(message, code="backend_unavailable")

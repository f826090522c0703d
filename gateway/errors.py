"""What the gateway tells a client that it cannot serve: the error tree, free of any wire
format. The HTTP edge renders it in the shape of the API the request came through (OpenAI's
``{"error": {"message", "type", "param", "code"}}``; see ``gateway.http.errors``).

    GatewayError                  status    type
     ├── BadRequest               400       invalid_request_error   (field named in `param`)
     ├── Unauthorized             401       authentication_error
     ├── Forbidden                403       permission_error
     ├── NotFound                 404       invalid_request_error
     ├── PayloadTooLarge          413       invalid_request_error
     ├── TooManyRequests          429       rate_limit_error        (`retry_after` seconds)
     ├── BadGateway               502       upstream_error          (a backend answered garbage)
     ├── ServiceUnavailable       503       service_unavailable
     └── GatewayTimeout           504       timeout
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after  # when the client may try again, if anyone knows
        super().__init__(message)


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class TooManyRequests(GatewayError):
    status = 429
    type = "rate_limit_error"


class BadGateway(GatewayError):
    status = 502
    type = "upstream_error"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    type = "timeout"

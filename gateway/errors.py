"""Errors the gateway answers with, in OpenAI's JSON shape:
``{"error": {"message", "type", "param", "code"}}``.

    GatewayError                  status    type
     ├── BadRequest               400       invalid_request_error   (field named in `param`)
     ├── Unauthorized             401       authentication_error
     ├── Forbidden                403       permission_error
     ├── NotFound                 404       invalid_request_error
     ├── PayloadTooLarge          413       invalid_request_error
     ├── TooManyRequests          429       rate_limit_error
     ├── BadGateway               502       upstream_error          (a backend answered garbage)
     ├── ServiceUnavailable       503       service_unavailable
     └── GatewayTimeout           504       timeout
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    status = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        super().__init__(message)

    def response(self, extra_headers: Mapping[str, str] | None = None) -> Response:
        return error_response(
            self.status,
            self.message,
            type_=self.type,
            param=self.param,
            code=self.code,
            headers={**self.headers, **(extra_headers or {})},
        )


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


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
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
) -> Response:
    return Response(
        content=error_body(message, type_=type_, param=param, code=code),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )

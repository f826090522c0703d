"""Every response carries its request id, under the header names the official SDKs read.

The pipeline's answers and refusals already carry ``x-request-id`` (their receipt); responses
made before a request reaches it (a missing or wrong key, a body too large, an unknown path or
model id, ``count_tokens``) get a fresh one here, so an SDK's error always has an id to quote.

Anthropic's SDKs read ``request-id``, not ``x-request-id`` (``message._request_id``,
``withResponse().request_id``, ``error.requestID`` / ``error.request_id``): under
``/v1/messages`` the same id goes out under both names.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ids import request_id

ANTHROPIC_PREFIX = "/v1/messages"
_X_REQUEST_ID = b"x-request-id"
_REQUEST_ID = b"request-id"


class RequestIds:
    """Pure ASGI middleware: adds ``x-request-id`` where a response has none and, under
    ``/v1/messages``, ``request-id`` with the same value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        anthropic = str(scope["path"]).startswith(ANTHROPIC_PREFIX)

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": with_ids(message.get("headers", ()), anthropic)}
            await send(message)

        await self.app(scope, receive, send_with_ids)


def with_ids(
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], anthropic: bool
) -> list[tuple[bytes, bytes]]:
    """``headers`` with the request id present (a fresh one if they had none), and under
    Anthropic's name too when ``anthropic``."""
    listed = list(headers)
    found = next((value for name, value in listed if name.lower() == _X_REQUEST_ID), None)
    if found is None:
        found = request_id().encode()
        listed.append((_X_REQUEST_ID, found))
    if anthropic and not any(name.lower() == _REQUEST_ID for name, _ in listed):
        listed.append((_REQUEST_ID, found))
    return listed

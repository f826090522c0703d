"""Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware):
body-size limit and API-key authentication."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.governance.book import KeyBook, key_digest
from gateway.http.errors import error_body

OPEN_PATHS = frozenset({"/healthz"})
# What the ops port (TIERGATE_OPS_PORT) serves, with no key, and all it serves; with
# TIERGATE_OPEN_OPS the main port serves them with no key too.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_PREFIXES = ("/admin", "/dashboard")
# The one page meant for a browser, which cannot send a bearer token from the address bar: it
# also takes the admin key as the password of HTTP Basic auth, and a 401 there asks for it.
BROWSER_PATHS = frozenset({"/dashboard"})
BASIC_CHALLENGE = {"www-authenticate": 'Basic realm="tiergate"'}
KEYS_RETRY_AFTER_S = "2"  # a replica re-reads the keys every TIERGATE_KEYS_REFRESH_S (2 s)

log = structlog.get_logger("tiergate.http")


async def _send_error(
    send: Send,
    status: int,
    message: str,
    type_: str,
    code: str,
    extra: Mapping[str, str] = {},
    *,
    path: str,
) -> None:
    body = error_body(message, type_=type_, code=code, status=status, path=path)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with a 413: at once when Content-Length says so
    (nothing is read), or as soon as a chunked body passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send, scope["path"])
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, scope["path"])

    async def _refuse(self, send: Send, path: str) -> None:
        await _send_error(
            send,
            413,
            f"request body too large: the limit is {self.limit} bytes; send a smaller body",
            "invalid_request_error",
            "body_too_large",
            {"connection": "close"},
            path=path,
        )


class ApiKeys:
    """Every path but ``/healthz`` needs a client key; admin paths need the admin key.

    Keys come from the ``KeyBook``: bootstrap keys and virtual keys (re-read from the database).
    A request that arrived on ``ops_port`` may reach only ``OPS_PATHS``, with no key (404 for
    anything else); with ``open_ops`` those paths need no key on the main port either.

    With no key of any kind (loopback-only mode) every path is open. With client keys but no
    admin key, admin paths are refused: there is no safe default for them. Keys are looked up
    by SHA-256 digest, so a lookup takes the same time whatever the key. ``/dashboard`` also
    accepts the admin key as an HTTP Basic password (any user name); no other path does.
    The caller's ``Grant`` goes to ``scope["state"]["grant"]`` and its id to ``key_id``;
    ``scope["state"]["operator"]`` is set for the admin key, the ops port and loopback-only
    mode: those see operator details (``/readyz``'s reasons) that client keys do not.
    """

    def __init__(
        self,
        app: ASGIApp,
        book: KeyBook,
        *,
        ops_port: int | None = None,
        open_ops: bool = False,
    ) -> None:
        self.app = app
        self.book = book
        self._ops_port = ops_port
        self._open_paths = OPS_PATHS if open_ops else OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._ops_port is not None and _local_port(scope) == self._ops_port:
            if scope["path"] in OPS_PATHS:
                scope.setdefault("state", {})["operator"] = True
                await self.app(scope, receive, send)
            else:
                await _send_error(
                    send,
                    404,
                    "the ops port serves only /healthz, /readyz and /metrics",
                    "invalid_request_error",
                    "not_found",
                    path=scope["path"],
                )
            return
        if scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        book = self.book
        if book.open:
            state["key_id"] = "local"
            state["operator"] = True
            await self.app(scope, receive, send)
            return
        token = _token(scope)
        admin_path = scope["path"].startswith(ADMIN_PREFIXES)
        browser = scope["path"] in BROWSER_PATHS
        challenge = BASIC_CHALLENGE if browser else {}
        if token is None and browser:
            token = _basic_password(scope)
        if token is None:
            how = "'Authorization: Bearer <key>'"
            if browser:
                how += " or as the password of HTTP Basic auth"
            await _send_error(
                send,
                401,
                f"missing API key: send it as {how} (or 'x-api-key: <key>')",
                "authentication_error",
                "missing_api_key",
                challenge,
                path=scope["path"],
            )
            return
        digest = key_digest(token)
        is_admin = book.admin is not None and hmac.compare_digest(digest, book.admin)
        if admin_path:
            if book.admin is None:
                # The caller is told what happened; the operator's log says which setting.
                log.warning(
                    "admin_route_refused",
                    path=scope["path"],
                    why="no admin key: set TIERGATE_ADMIN_KEY to open the admin routes",
                )
                await _send_error(
                    send,
                    403,
                    "admin routes are disabled: this gateway has no admin key configured",
                    "permission_error",
                    "admin_disabled",
                    path=scope["path"],
                )
                return
            if not is_admin:
                known = book.knows(digest)
                await _send_error(
                    send,
                    403 if known else 401,
                    "this route needs the admin key",
                    "permission_error" if known else "authentication_error",
                    "admin_key_required",
                    {} if known else challenge,
                    path=scope["path"],
                )
                return
            state["key_id"], state["operator"] = "admin", True
        elif is_admin:
            state["key_id"], state["operator"] = "admin", True
        else:
            grant = book.lookup(digest)
            if grant is None and book.unread:
                # Started while the ledger database did not answer: the key may be a virtual
                # key not read yet. Telling its holder it is invalid would be wrong.
                await _send_error(
                    send,
                    503,
                    "API keys are not available yet: this gateway has not read its virtual keys "
                    "from the ledger database, which does not answer; retry shortly",
                    "service_unavailable",
                    "keys_unavailable",
                    {"retry-after": KEYS_RETRY_AFTER_S},
                    path=scope["path"],
                )
                return
            if grant is None:
                await _send_error(
                    send,
                    401,
                    "invalid API key",
                    "authentication_error",
                    "invalid_api_key",
                    path=scope["path"],
                )
                return
            if grant.expires_at is not None and grant.expired(datetime.now(UTC)):
                await _send_error(
                    send,
                    401,
                    f"this API key expired at {grant.expires_at.isoformat()}: ask for a new "
                    f"one (or `tiergate keys update {grant.key_id} --expires 30d`)",
                    "authentication_error",
                    "expired_api_key",
                    path=scope["path"],
                )
                return
            state["key_id"] = grant.key_id
            state["grant"] = grant
        await self.app(scope, receive, send)


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


def _token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value:
            return bytes(value).decode("latin-1").strip()
    return None


def _basic_password(scope: Scope) -> str | None:
    """The password of an ``Authorization: Basic`` header (the user name is ignored)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() != "basic" or not credentials.strip():
                return None
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            _user, sep, password = decoded.decode("utf-8", "replace").partition(":")
            return password if sep and password else None
    return None

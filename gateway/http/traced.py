"""The server span: pure ASGI middleware (installed only when tracing is on) that opens one span
per request, continuing the client's W3C ``traceparent``, makes it the request's span for
everything the request does (``tracing.bind``; streams included: they run in a copy of this
context) and ends it after the response's last byte. Probes and scrapes are not traced."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import tracing
from gateway.tracing import Tracing

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class Traced:
    def __init__(self, app: ASGIApp, tracing: Tracing, paths: Iterable[str]) -> None:
        self.app = app
        self.tracing = tracing
        self.paths = frozenset(paths)  # span names only from known routes: bounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNTRACED:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        method = scope["method"]
        name = f"{method} {path}" if path in self.paths else method
        attributes = {"http.request.method": method, "url.path": path}
        tracer = self.tracing.tracer
        if carrier:
            span = tracer.start_span(name, tracing.extract(carrier), tracing.SERVER, attributes)
        else:
            span = tracer.start_child(name, None, tracing.SERVER, attributes)
        status = 500
        errored = False

        # A plain function handing back ``send``'s own awaitable: no coroutine of ours per
        # message (a stream sends one per chunk), only the status read on the way.
        def traced_send(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        bound = tracing.bind(self.tracing, span)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            errored = True
            tracing.failed(span, type(exc).__name__)
            raise
        finally:
            tracing.unbind(bound)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 and not errored:
                tracing.failed(span, str(status))
            span.end()

"""The server span: pure ASGI middleware (installed only when tracing is on) that opens one span
per request, continuing the client's W3C ``traceparent``, makes it the current span for
everything the request does (streams included: they run in a copy of this context) and ends it
after the response's last byte. Probes and scrapes are not traced."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import trace
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
        parent = tracing.extract(carrier) if carrier else None
        method = scope["method"]
        span = self.tracing.tracer.start_span(
            f"{method} {path}" if path in self.paths else method,
            context=parent,
            kind=tracing.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        status = 500
        errored = False

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        attached = otel_context.attach(trace.set_span_in_context(span))
        bound = tracing.bind(self.tracing)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            errored = True
            tracing.failed(span, type(exc).__name__)
            raise
        finally:
            tracing.unbind(bound)
            otel_context.detach(attached)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 and not errored:
                tracing.failed(span, str(status))
            span.end()

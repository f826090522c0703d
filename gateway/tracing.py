"""OpenTelemetry traces, off unless the standard ``OTEL_*`` variables ask for them.

One server span per request (opened by ``gateway.http.traced``, which continues a client's W3C
``traceparent``) and, under it, a span for scoring and planning, the cache lookup, each attempt
on a backend (a CLIENT span named and attributed after the GenAI semantic conventions, whose
context is passed on to HTTP upstreams as ``traceparent``) and the ledger write.

The request's ``Tracing`` and its server span travel in two context variables the server
middleware sets (``bind``): code on the request path asks ``current()`` and does nothing more
when it is ``None`` (tracing off, or work outside a request); the steps' spans are made under
``server_span()`` directly, without going through OpenTelemetry's context (nothing else in the
process makes spans: the lean tracer is not the global provider). Prompt and answer text are
recorded only with ``TIERGATE_TRACE_CONTENT=true``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from gateway.tracer import InMemory, LeanSpan, LeanTracer, Sampler, TracingConfigError

# Only W3C trace context crosses the gateway (never baggage: a client must not be able to set
# headers that reach an upstream).
PROPAGATOR = TraceContextTextMapPropagator()
TRACER_NAME = "tiergate"
DEFAULT_SERVICE = "tiergate"
# OTEL_TRACES_EXPORTER values this gateway speaks (the SDK's own names).
EXPORTERS = ("otlp", "console", "none")

AttributeValue = str | bool | int | float | Sequence[str]

_CURRENT: ContextVar[Tracing | None] = ContextVar("tiergate_tracing", default=None)
_SPAN: ContextVar[Span | None] = ContextVar("tiergate_server_span", default=None)

# The GenAI conventions' operation names, by the gateway's wire format.
OPERATIONS: Mapping[str, str] = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


@dataclass(frozen=True, slots=True)
class Tracing:
    """A process's tracer and what it may record."""

    tracer: LeanTracer
    content: bool = False  # prompt and answer text on the spans (TIERGATE_TRACE_CONTENT)
    close: Callable[[], None] | None = None  # at shutdown: export what is queued, then stop

    def child(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        """A span under the request's server span (a new trace outside a request); the caller
        ends it."""
        return self.tracer.start_child(name, _SPAN.get(), kind, attributes)

    def shutdown(self) -> None:
        if self.close is not None:
            self.close()


def current() -> Tracing | None:
    """The tracing of the request being served, or None (off, or outside a request)."""
    return _CURRENT.get()


def server_span() -> Span | None:
    """The server span of the request being served, or None (off, or outside a request)."""
    return _SPAN.get()


def bind(tracing: Tracing | None, span: Span | None = None) -> tuple[object, object]:
    """Make ``tracing`` and the request's server ``span`` the current ones (the server
    middleware, per request); returns the tokens for ``unbind``."""
    return _CURRENT.set(tracing), _SPAN.set(span)


def unbind(tokens: tuple[object, object]) -> None:
    _CURRENT.reset(tokens[0])  # type: ignore[arg-type]
    _SPAN.reset(tokens[1])  # type: ignore[arg-type]


def headers_for(span: Span) -> tuple[tuple[str, str], ...]:
    """The W3C trace-context headers that make ``span`` an upstream's parent: what
    ``PROPAGATOR.inject`` writes (a test checks), without a context and a carrier per call.
    The ``SpanContext`` is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
    is_valid): read by index, not through five properties (a Python call each)."""
    ids = span.context if type(span) is LeanSpan else span.get_span_context()
    if not ids[5]:
        return ()
    parent = f"00-{ids[0]:032x}-{ids[1]:016x}-{ids[3]:02x}"
    state = ids[4]
    if state is DEFAULT_TRACE_STATE or not state:
        return (("traceparent", parent),)
    return (("traceparent", parent), ("tracestate", state.to_header()))


def extract(headers: Mapping[str, str]) -> Context:
    """The context a client's ``traceparent`` (and ``tracestate``) describes; empty without."""
    return PROPAGATOR.extract(headers)


def failed(span: Span, error: str) -> None:
    """Mark ``span`` as failed with the error's class name (the conventions' ``error.type``)."""
    span.set_attribute("error.type", error)
    span.set_status(StatusCode.ERROR)


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces: an OTLP endpoint is set, or
    ``OTEL_TRACES_EXPORTER`` names an exporter, and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    if exporter:
        return True
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def open_tracing(content: bool, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The process's tracing from the standard variables, or None when they ask for none.

    ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf, the default when an endpoint is
    set; sent from an exporter process, ``gateway.otlp_process``, whose SDK client the
    ``OTEL_EXPORTER_OTLP_*`` variables configure) or ``console``.
    ``OTEL_SERVICE_NAME`` (default ``tiergate``) and ``OTEL_RESOURCE_ATTRIBUTES`` name the
    resource; ``OTEL_TRACES_SAMPLER(_ARG)`` are read by ``tracer.Sampler``, ``OTEL_BSP_*`` by
    ``otlp_export.BatchExport``.
    """
    env = os.environ if environ is None else environ
    if not configured(env):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    from gateway.otlp_export import BatchExport, Send, console_sender, otlp_sender

    sampler = Sampler.from_env(env)
    named = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE}
    resource = Resource.create(named)
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    stop: Callable[[], None] = _nothing
    send: Send
    if kind == "otlp":
        protocol = env.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        ).strip()
        if protocol not in ("", "http/protobuf"):
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: tiergate exports OTLP over HTTP "
                f"(http/protobuf); point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP "
                f"port (4318) and unset the protocol"
            )
        # The exporter process gets this process's environment with ``environ``'s variables.
        send, stop = otlp_sender(resource, TRACER_NAME, {**os.environ, **env})
    elif kind == "console":
        send = console_sender(resource)
    else:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={kind!r} is not one tiergate has: use one of "
            f"{', '.join(EXPORTERS)}"
        )
    batches = BatchExport.from_env(send, env)

    def close() -> None:
        batches.shutdown()
        stop()

    return Tracing(LeanTracer(batches, sampler), content=content, close=close)


def _nothing() -> None:
    pass


SERVER = SpanKind.SERVER
CLIENT = SpanKind.CLIENT


class step:  # lower case: used like a function, ``with step("tiergate.plan") as span``
    """A child span of the current request around a block (nothing when tracing is off): the
    block gets the span (or None) to add attributes; an exception marks it failed."""

    __slots__ = ("span",)

    def __init__(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        tracing = _CURRENT.get()
        self.span = None if tracing is None else tracing.child(name, attributes)

    def __enter__(self) -> Span | None:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        if self.span is not None:
            if kind is not None:
                failed(self.span, kind.__name__)
            self.span.end()


def in_memory(*, content: bool = False) -> tuple[Tracing, InMemory]:
    """Tracing that keeps every ended span in memory (every trace sampled): for tests
    (``create_app(settings, tracing=...)``), shipped like the fake backend."""
    spans = InMemory()
    return Tracing(LeanTracer(spans), content=content), spans

"""A lean OpenTelemetry tracer: the OpenTelemetry API (``Tracer``, ``Span``, contexts and W3C
propagation are the API's own), with spans that are plain records.

Why not the SDK's ``TracerProvider``: measured on the gateway's request path, its spans cost
about 55 µs each (locks, attribute validation, a span-processor chain, a copy at the end) — a
request's four or five spans took a fifth of its CPU before any export (bench/README.md,
"Tracing"). Here a span is a small object (slots) whose attributes are a dict; ending it
freezes it and hands it, as the record, to a sink (the batch exporter, or memory in tests).
What is left out, on purpose: span processors, events and links (the gateway makes none;
``add_event`` and ``add_link`` are accepted and dropped), attribute limits (the gateway's
attributes are few and bounded), and a copy of list values given at the start (the gateway
passes tuples; ``set_attribute`` still makes a list a tuple).

Sampling follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` as the SDK reads them:
``always_on``, ``always_off``, ``traceidratio`` and their ``parentbased_`` forms (the default,
``parentbased_always_on``: a client's sampled flag is obeyed, every root is sampled).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util._decorator import _agnosticcontextmanager as _agnostic
from opentelemetry.util.types import Attributes, AttributeValue

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ID_SPACE = 1 << 64  # a ratio sampler compares the trace id's low 64 bits
UNSET = Status(StatusCode.UNSET)  # every span's status until one is set (a Status is immutable)
_new_context = tuple.__new__
_INVALID = trace.INVALID_SPAN_CONTEXT


Sink = Callable[["LeanSpan"], None]


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something tiergate cannot do (the message says what)."""


@dataclass(frozen=True, slots=True)
class Sampler:
    """Which new traces are recorded: ``ratio`` of root traces, and (``parent_based``) whatever
    a parent span decided for its children."""

    ratio: float = 1.0
    parent_based: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Sampler:
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        if name not in SAMPLERS:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER={name!r} is not one tiergate has: use one of "
                f"{', '.join(SAMPLERS)}"
            )
        parent_based = name.startswith("parentbased_")
        kind = name.removeprefix("parentbased_")
        if kind == "always_on":
            return cls(1.0, parent_based)
        if kind == "always_off":
            return cls(0.0, parent_based)
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip() or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={raw!r}: a traceidratio sampler needs a ratio "
                f"between 0 and 1, e.g. 0.1 to record one trace in ten"
            )
        return cls(ratio, parent_based)

    def sampled(self, trace_id: int, parent: SpanContext | None) -> bool:
        if self.parent_based and parent is not None:
            return parent.trace_flags.sampled
        if self.ratio >= 1.0:
            return True
        return (trace_id & (_ID_SPACE - 1)) < self.ratio * _ID_SPACE


class LeanSpan(Span):
    """A recording span, and, once ended, the record its sink gets (``FinishedSpan``): the
    fields the SDK's ``ReadableSpan`` has under the same names. Ending it freezes it (later
    attributes, status and names are ignored), so the exporter's thread reads it as it is,
    without a copy."""

    __slots__ = (
        "_sink",
        "attributes",
        "context",
        "end_time",
        "kind",
        "name",
        "parent",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        sink: Sink,
        start_time: int | None = None,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.status = UNSET
        self.start_time = time.time_ns() if start_time is None else start_time  # ns, epoch
        self.end_time: int | None = None  # None while recording
        self._sink = sink

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """All at once (one dict update, the way the gateway sets a step's results); a list
        value is kept as a tuple, as ``set_attribute`` keeps it."""
        if self.end_time is None:
            self.attributes.update(attributes)
            if list in map(type, attributes.values()):
                for key, value in attributes.items():
                    if isinstance(value, list):
                        self.attributes[key] = tuple(value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_time is None:
            self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Not recorded (see the module's docstring)."""

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Not recorded (see the module's docstring)."""

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is None:
            self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The exception's type as ``error.type`` (its message may hold what a trace must not)."""
        self.set_attribute("error.type", type(exception).__name__)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is None:
            self.end_time = time.time_ns() if end_time is None else end_time
            self._sink(self)


# What sinks and exporters get: an ended span (its ``end_time`` set).
FinishedSpan = LeanSpan


class LeanTracer(trace.Tracer):
    """Spans for one process: sampled as ``sampler`` says, each ended one handed to ``sink``."""

    def __init__(self, sink: Sink, sampler: Sampler | None = None) -> None:
        self._sink = sink
        self._sampler = sampler or Sampler()
        self._bits = random.Random().getrandbits
        # A parent's flag decides (parent-based sampling): read in ``_start`` without a call.
        self._parent_decides = self._sampler.parent_based

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        above = trace.get_current_span(context).get_span_context()
        return self._start(name, above, kind, attributes, start_time)

    def start_child(
        self,
        name: str,
        parent: Span | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
    ) -> Span:
        """A span under ``parent`` (None: a new trace), without a context to look it up in:
        the gateway keeps its request's server span at hand (``tracing.server_span``)."""
        if parent is None:
            above = _INVALID
        elif type(parent) is LeanSpan:
            above = parent.context  # no method call for the gateway's own spans
        else:
            above = parent.get_span_context()
        return self._start(name, above, kind, attributes, None)

    def _start(
        self,
        name: str,
        above: SpanContext,
        kind: SpanKind,
        attributes: Attributes,
        start_time: int | None,
    ) -> Span:
        bits = self._bits
        parent: SpanContext | None
        # A SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
        # is_valid): read by index, not through its properties (a Python call each).
        if above[5]:
            parent, trace_id, state = above, above[0], above[4]
        else:
            parent, trace_id, state = None, bits(128) or 1, DEFAULT_TRACE_STATE
        span_id = bits(64) or 1
        if parent is not None and self._parent_decides:
            sampled = bool(parent[3] & TraceFlags.SAMPLED)
        else:
            sampled = self._sampler.sampled(trace_id, parent)
        if not sampled:
            unsampled = SpanContext(trace_id, span_id, False, _UNSAMPLED, state)
            return NonRecordingSpan(unsampled)
        # SpanContext's own __new__ checks the ids' range, known good here: the tuple directly.
        ours = _new_context(SpanContext, (trace_id, span_id, False, _SAMPLED, state, True))
        # Attribute values as given: the gateway passes tuples, and strings and numbers.
        values = dict(attributes) if attributes else {}
        return LeanSpan(name, ours, parent, kind, values, self._sink, start_time)

    @_agnostic
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class InMemory:
    """Every ended span, kept: ``tracing.in_memory()``'s sink, for tests."""

    def __init__(self) -> None:
        self._spans: list[FinishedSpan] = []

    def __call__(self, span: FinishedSpan) -> None:
        self._spans.append(span)

    def get_finished_spans(self) -> tuple[FinishedSpan, ...]:
        return tuple(self._spans)

    def clear(self) -> None:
        self._spans.clear()

"""A lean OpenTelemetry tracer: the OpenTelemetry API (``Tracer``, ``Span``, contexts and W3C
propagation are the API's own), with spans that are plain records.

Why not the SDK's ``TracerProvider``: measured on the gateway's request path, its spans cost
about 55 µs each (locks, attribute validation, a span-processor chain, a copy at the end) — a
request's four or five spans took a fifth of its CPU before any export (bench/README.md,
"Tracing"). Here a span is a small object whose attributes are a dict; ending it hands one
frozen record to a sink (the batch exporter, or memory in tests). What is left out, on purpose:
span processors, events and links (the gateway makes none; ``add_event`` and ``add_link`` are
accepted and dropped), attribute limits (the gateway's attributes are few and bounded).

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


@dataclass(frozen=True, slots=True)
class FinishedSpan:
    """An ended span, as exporters and tests read it (the SDK's ``ReadableSpan`` names)."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    start_time: int  # ns since the epoch
    end_time: int
    attributes: Mapping[str, Any]
    status: Status


Sink = Callable[[FinishedSpan], None]


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
    """A recording span: a name, its context, attributes in a dict, a status."""

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
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._sink = sink
        self._status = Status(StatusCode.UNSET)
        self._start = time.time_ns() if start_time is None else start_time
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self._ended:
            self._attributes[key] = tuple(value) if isinstance(value, list) else value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Not recorded (see the module's docstring)."""

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Not recorded (see the module's docstring)."""

    def update_name(self, name: str) -> None:
        self._name = name

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended:
            return
        self._status = status if isinstance(status, Status) else Status(status, description)

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
        if self._ended:
            return
        self._ended = True
        self._sink(
            FinishedSpan(
                self._name,
                self._context,
                self._parent,
                self._kind,
                self._start,
                time.time_ns() if end_time is None else end_time,
                self._attributes,
                self._status,
            )
        )


class LeanTracer(trace.Tracer):
    """Spans for one process: sampled as ``sampler`` says, each ended one handed to ``sink``."""

    def __init__(self, sink: Sink, sampler: Sampler | None = None) -> None:
        self._sink = sink
        self._sampler = sampler or Sampler()
        self._random = random.Random()

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
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            parent_or_none = None
            trace_id = self._random.getrandbits(128) or 1
            state = None
        else:
            parent_or_none = parent
            trace_id = parent.trace_id
            state = parent.trace_state
        span_id = self._random.getrandbits(64) or 1
        if not self._sampler.sampled(trace_id, parent_or_none):
            unsampled = SpanContext(trace_id, span_id, False, _UNSAMPLED, state)
            return NonRecordingSpan(unsampled)
        ours = SpanContext(trace_id, span_id, False, _SAMPLED, state)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in (attributes or {}).items()}
        return LeanSpan(name, ours, parent_or_none, kind, values, self._sink, start_time)

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

"""The lean tracer's pieces: the OTLP bytes it writes are the message the SDK's encoder makes
for the same spans, also from the rows the exporter process reads; that process posts each
batch, the rest when its input closes, and is started again after it died; batches are sent,
and a full queue drops (and counts) rather than waits; sampling follows the standard variables
and a client's sampled flag; the steps' spans hang under the request's bound server span."""

from __future__ import annotations

import marshal
import os
import threading
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway import tracing
from gateway.otlp_export import BatchExport, ExporterProcess
from gateway.otlp_wire import SpanEncoder, rows
from gateway.tracer import (
    FinishedSpan,
    InMemory,
    LeanSpan,
    LeanTracer,
    Sampler,
    TracingConfigError,
)
from gateway.tracing import PROPAGATOR, extract, headers_for, in_memory
from tests.support.otlp_receiver import receiver

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
VALUES: dict[str, AttributeValue] = {
    "text": "a string",
    "unicode": "naïve ✓",
    "yes": True,
    "no": False,
    "count": 42,
    "negative": -7,
    "big": 2**62,
    "ratio": 0.125,
    "names": ["small", "spare", "big"],
    "empty": "",
}


def some_spans() -> tuple[FinishedSpan, ...]:
    spans = InMemory()
    tracer = LeanTracer(spans)
    parent = extract({"traceparent": PARENT, "tracestate": "vendor=abc"})
    server = tracer.start_span("POST /v1/chat/completions", parent, SpanKind.SERVER, VALUES)
    inside = trace.set_span_in_context(server)
    for i in range(3):
        child = tracer.start_span(f"chat model-{i}", inside, SpanKind.CLIENT, {"i": i})
        if i == 1:
            child.set_status(StatusCode.ERROR, "it failed")
            child.set_attribute("error.type", "BackendTimeout")
        child.end()
    plain = tracer.start_span("tiergate.plan", inside)
    plain.end()
    server.end()
    root = tracer.start_span("a root span")  # no parent at all
    root.end()
    return spans.get_finished_spans()


def as_sdk(spans: Sequence[FinishedSpan], resource: Resource) -> list[ReadableSpan]:
    scope = InstrumentationScope("tiergate")
    return [
        ReadableSpan(
            name=s.name,
            context=s.context,
            parent=s.parent,
            resource=resource,
            attributes=s.attributes,
            kind=s.kind,
            status=s.status,
            start_time=s.start_time,
            end_time=s.end_time,
            instrumentation_scope=scope,
        )
        for s in spans
    ]


def test_the_bytes_are_the_sdk_encoders_message() -> None:
    resource = Resource.create({"service.name": "tiergate", "deployment.environment": "test"})
    spans = some_spans()
    encoder = SpanEncoder(resource, "tiergate")
    ours = ExportTraceServiceRequest.FromString(encoder.encode(spans))
    theirs = encode_spans(as_sdk(spans, resource))
    assert ours == theirs
    # Again, from the memo of repeated pairs: still the same message.
    assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == theirs
    decoded = ours.resource_spans[0].scope_spans[0].spans
    assert len(decoded) == 6
    server = next(s for s in decoded if s.name.startswith("POST"))
    assert server.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent_span_id.hex() == "b7ad6b7169203331"
    assert server.trace_state == "vendor=abc"


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    sent: list[int] = []
    gate = threading.Event()

    def send(spans: Sequence[FinishedSpan]) -> bool:
        gate.wait(10)  # a collector that does not answer yet
        sent.append(len(spans))
        return True

    spans = some_spans()
    batches = BatchExport(send, delay_s=60.0, max_queue=4, batch=100)
    for span in (*spans, *spans):
        batches(span)  # returns at once: the queue holds 4, the other 8 are dropped
    assert batches.dropped == 8
    gate.set()
    assert batches.flush(10)
    batches.shutdown()
    assert sent == [4]


def test_batches_go_out_when_full_and_at_shutdown() -> None:
    sent: list[int] = []
    done = threading.Event()

    def send(spans: Sequence[FinishedSpan]) -> bool:
        sent.append(len(spans))
        if sum(sent) >= 5:
            done.set()
        return True

    batches = BatchExport(send, delay_s=60.0, max_queue=100, batch=5)
    spans = some_spans()
    for span in (*spans, *spans):
        batches(span)
    assert done.wait(10)  # a full batch went out without waiting for the schedule
    batches.shutdown()  # ... and the rest at shutdown
    assert sum(sent) == 12
    assert max(sent) <= 5


def test_sampling_follows_the_variables_and_the_clients_flag() -> None:
    spans = InMemory()
    never = LeanTracer(spans, Sampler.from_env({"OTEL_TRACES_SAMPLER": "always_off"}))
    assert isinstance(never.start_span("x"), NonRecordingSpan)
    obeying = LeanTracer(spans, Sampler.from_env({}))  # parentbased_always_on
    unsampled = extract({"traceparent": UNSAMPLED_PARENT})
    assert not obeying.start_span("x", unsampled).is_recording()
    assert obeying.start_span("x", extract({"traceparent": PARENT})).is_recording()

    def ratio(value: str) -> LeanTracer:
        variables = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": value}
        return LeanTracer(spans, Sampler.from_env(variables))

    recorded = sum(ratio("0.25").start_span("root").is_recording() for _ in range(4000))
    assert 800 < recorded < 1200
    # A ratio sampler decides on the trace id (its low 64 bits: 0.517 of the range here),
    # whatever the parent's flag says.
    assert ratio("0.75").start_span("x", unsampled).is_recording()
    assert not ratio("0.5").start_span("x", extract({"traceparent": PARENT})).is_recording()
    for bad in ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, {
        "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"
    }):  # fmt: skip
        with pytest.raises(TracingConfigError, match="OTEL_TRACES_SAMPLER"):
            Sampler.from_env(bad)


def test_upstream_headers_are_what_the_propagator_writes() -> None:
    tracer = LeanTracer(InMemory())
    for parent in (
        extract({"traceparent": PARENT, "tracestate": "vendor=abc,other=1"}),
        extract({"traceparent": UNSAMPLED_PARENT}),
        extract({"traceparent": PARENT}),
        None,
    ):
        span = tracer.start_span("chat model", parent, SpanKind.CLIENT)
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        assert headers_for(span) == tuple(carrier.items())
    assert headers_for(trace.INVALID_SPAN) == ()


def test_a_remembered_pair_answers_only_for_its_own_type() -> None:
    """1, True and 1.0 are equal as Python values, 0.0 and -0.0 too: each is still written as
    its own type, however often it repeats."""
    spans = InMemory()
    tracer = LeanTracer(spans)
    for value in (1, True, 1.0, 0.0, -0.0, 1, True, 1.0, -0.0, 0.0, "1", ("1",), ["1"]):
        tracer.start_span("x", attributes={"value": value}).end()
    resource = Resource.create({"service.name": "tiergate"})
    encoder = SpanEncoder(resource, "tiergate")
    theirs = encode_spans(as_sdk(spans.get_finished_spans(), resource))
    for _ in range(2):
        ours = ExportTraceServiceRequest.FromString(encoder.encode(spans.get_finished_spans()))
        assert ours == theirs
        # == takes -0.0 for 0.0: the bytes, re-serialized, do not
        assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
            deterministic=True
        )


def test_a_drain_sends_what_was_queued_not_what_keeps_arriving() -> None:
    """Spans that arrive while a batch is being sent wait for the next round (chasing them
    under load made a stream of tiny batches); full batches and the shutdown send them all."""
    sent: list[int] = []
    spans = some_spans()
    batches: BatchExport

    def send(batch: Sequence[FinishedSpan]) -> bool:
        sent.append(len(batch))
        if len(sent) < 4:
            batches(spans[0])  # a request ends meanwhile
        return True

    batches = BatchExport(send, delay_s=60.0, max_queue=100, batch=50)
    for span in spans:
        batches(span)
    assert batches.flush(10)
    assert sent == [len(spans)]  # one batch; the span that came during it is still queued
    assert batches.flush(10)
    assert sent == [len(spans), 1]
    batches.shutdown()  # ... and at shutdown, the last ones, those sent meanwhile too
    assert sent == [len(spans), 1, 1, 1]


def test_spans_under_the_bound_server_span() -> None:
    """The steps' spans are children of the request's server span (``tracing.bind``), with no
    OpenTelemetry context in between; a client's unsampled flag carries to them, and the
    span's attributes set at once keep a list as a tuple and nothing after the end."""
    traced, spans = in_memory()
    assert tracing.server_span() is None
    root = traced.child("outside a request")  # a trace of its own
    assert root.get_span_context().is_valid
    assert isinstance(root, LeanSpan)
    assert root.parent is None
    server = traced.tracer.start_span("POST /x", extract({"traceparent": PARENT}), SpanKind.SERVER)
    bound = tracing.bind(traced, server)
    try:
        assert tracing.current() is traced
        assert tracing.server_span() is server
        with tracing.step("tiergate.plan") as step:
            assert step is not None
            step.set_attributes({"tiergate.candidates": ["small", "big"], "tiergate.tier": "t"})
        attempt = traced.child("chat m", {"gen_ai.request.model": "m"}, SpanKind.CLIENT)
        attempt.end()
        attempt.set_attributes({"late": 1})
    finally:
        tracing.unbind(bound)
    assert tracing.current() is None
    assert tracing.server_span() is None
    server.end()
    plan, chat, _ = spans.get_finished_spans()
    for child in (plan, chat):
        assert child.parent == server.get_span_context()
        assert child.context.trace_id == server.get_span_context().trace_id
    assert plan.attributes == {"tiergate.candidates": ("small", "big"), "tiergate.tier": "t"}
    assert chat.kind is SpanKind.CLIENT
    assert chat.attributes == {"gen_ai.request.model": "m"}
    unsampled = traced.tracer.start_span("POST /x", extract({"traceparent": UNSAMPLED_PARENT}))
    bound = tracing.bind(traced, unsampled)
    try:
        quiet = traced.child("tiergate.plan")
    finally:
        tracing.unbind(bound)
    assert not quiet.is_recording()
    assert quiet.get_span_context().trace_id == unsampled.get_span_context().trace_id
    assert headers_for(quiet)[0][1].endswith("-00")  # the upstream hears: not sampled


def test_remembered_tuples_and_any_span_size_stay_the_sdk_encoders_message() -> None:
    """Tuples of strings are remembered (candidates, finish reasons); tuples of other types,
    whose equal values may be of different types, are written each time; spans of under 128
    bytes, of two-byte sizes and over 16 KB are framed alike."""
    spans = InMemory()
    tracer = LeanTracer(spans)
    values: list[AttributeValue] = [("a", "b"), (1, 2), (True, False), (1.0, 2.0), ("stop",)]
    for value in [*values, (1, 2), (True, False), ("a", "b"), (1.0, 2.0), *values]:
        tracer.start_span("x", attributes={"value": value}).end()
    tracer.start_span("y").end()  # a small span
    tracer.start_span("z", attributes={"big": "x" * 20_000}).end()  # a three-byte size
    resource = Resource.create({"service.name": "tiergate"})
    encoder = SpanEncoder(resource, "tiergate")
    theirs = encode_spans(as_sdk(spans.get_finished_spans(), resource))
    for _ in range(2):
        ours = ExportTraceServiceRequest.FromString(encoder.encode(spans.get_finished_spans()))
        assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
            deterministic=True
        )


def test_a_child_follows_its_parents_flag_whatever_the_parent_span_is() -> None:
    """``start_child`` under the gateway's own span, under another API span (sampled or not),
    and with a sampler that ignores parents."""
    spans = InMemory()
    tracer = LeanTracer(spans)
    for flags, recording in (("01", True), ("00", False)):
        remote = trace.get_current_span(extract({"traceparent": PARENT[:-2] + flags}))
        child = tracer.start_child("x", remote)
        assert child.is_recording() is recording
        assert child.get_span_context().trace_id == remote.get_span_context().trace_id
        assert tracer.start_child("y", child).is_recording() is recording
    never = LeanTracer(spans, Sampler(0.0, parent_based=False))
    sampled = trace.get_current_span(extract({"traceparent": PARENT}))
    assert not never.start_child("z", sampled).is_recording()


def test_rows_through_marshal_are_the_sdk_encoders_message() -> None:
    """What the export thread writes to the exporter process (``rows``, ``marshal``-ed) and
    what that process encodes from it: the SDK encoder's message for the same spans, statuses,
    a remote parent, a trace state and a list value included."""
    resource = Resource.create({"service.name": "tiergate"})
    spans = some_spans()
    read = marshal.loads(marshal.dumps(rows(spans)))
    ours = ExportTraceServiceRequest.FromString(SpanEncoder(resource, "tiergate").encode_rows(read))
    assert ours == encode_spans(as_sdk(spans, resource))


def test_the_exporter_process_posts_batches_and_the_rest_when_closed() -> None:
    """Each batch arrives at the collector, under the gateway's resource; ``close`` returns
    once the process has sent what it was given; one that died is started again."""
    resource = Resource.create({"service.name": "tiergate", "deployment.environment": "test"})
    spans = some_spans()
    with receiver() as collector:
        environ = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        exporter = ExporterProcess(resource, "tiergate", environ)
        try:
            assert exporter.send(spans)
            got = collector.wait_for(lambda received: len(received) == len(spans))
            assert {s.name for s in got} == {s.name for s in spans}
            assert got[0].resource["deployment.environment"] == "test"
            first = exporter._process
            assert first is not None
            first.kill()  # it dies: the next batch starts another
            first.wait()
            assert exporter.send(spans[:2])
            collector.wait_for(lambda received: len(received) == len(spans) + 2)
            assert exporter._process is not first
            assert exporter.send(spans)
        finally:
            exporter.close()
        assert len(collector.spans) == 2 * len(spans) + 2  # sent before close returned
        assert collector.posts == 3

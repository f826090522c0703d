"""Ended spans to a collector: OTLP ``ExportTraceServiceRequest`` bytes written straight to
protobuf's wire format, sent in batches by a separate exporter process through the SDK's
OTLP/HTTP client.

Why not the SDK's encoder: it builds a protobuf object per span, attribute and value — about
3.5 µs per attribute on the export thread, with the GIL held. Here each field is a few byte
concatenations and the (key, value) pairs that repeat from request to request (a route, a tier,
a model) are encoded once. The bytes decode, with the official classes, to the message the
SDK's encoder makes for the same spans (tests/observability/test_otlp_wire.py).

Why a process: encoding (~5 µs a span) and the HTTP post (~4 µs a span through ``requests``)
held the gateway's GIL for ~30 µs of every traced request, about 3% of a request's CPU taken
from the event loop. The gateway's export thread now only turns a batch into plain tuples
(``rows``) and writes them, ``marshal``-ed, to the exporter process's standard input
(``gateway.otlp_process``), which encodes and posts them; ``bench/README.md``, "Tracing", has
the measurements.

The batch exporter reads the SDK's variables: ``OTEL_BSP_SCHEDULE_DELAY`` (ms, 5000),
``OTEL_BSP_MAX_QUEUE_SIZE`` (2048: spans past it are dropped and counted, never waited for),
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512); the OTLP client, in the exporter process, reads
``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, compression, timeout, certificates).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import marshal
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from itertools import compress
from operator import not_
from typing import Any, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from gateway.tracer import UNSET, FinishedSpan

log = logging.getLogger(__name__)

_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
# Span.flags: whether the parent is remote is known (0x100), and it is (0x200).
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_PAIRS_KEPT = 4096  # encoded (key, value) pairs remembered; forgotten all at once when full
_SMALL = tuple(bytes((i,)) for i in range(0x80))  # the one-byte varints

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it: ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) numbered ``tag`` (< 16)."""
    size = len(payload)
    return _SMALL[tag << 3 | 2] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(tag: int, key: str, value: Any) -> bytes:
    """One attribute: a ``KeyValue`` field numbered ``tag``."""
    return _field(tag, _field(1, key.encode()) + _field(2, _any_value(value)))


_SPAN_ATTRIBUTE = 9  # Span.attributes
# Span.kind by its OTLP number (0: unspecified, never written by the tracer).
_KIND_FIELDS = tuple(b"\x30" + _varint(number) for number in range(6))
_INTERNAL, _SERVER, _CLIENT = SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT
_pack_times = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano, end_time_unix_nano
_pack_ids = struct.Struct(">HQQHQ").pack  # tag+size, trace id (high, low), tag+size, span id
_pack_parent = struct.Struct(">HQ").pack  # tag+size, parent span id
_pack_two = struct.Struct("BBB").pack  # a tag and a two-byte varint
_LOW64 = (1 << 64) - 1
_NO_STATUS = _field(15, b"")  # the status written for an unset one, as the SDK's encoder does
# Span.flags: the parent is local (or there is none), or remote.
_LOCAL_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
# Keys whose values differ on every span: not worth remembering.
_VARYING = frozenset({"tiergate.request_id"})
_REMEMBERED = frozenset({str, bool, int, float})


# An ended span as plain values (what ``marshal`` writes, and what the encoder reads): name,
# trace id, span id, parent span id (None: a root), whether the parent is remote, the kind's
# OTLP number, start and end (ns), attributes, the status's OTLP code and description, the
# trace state's header ("" when empty).
Row = tuple[str, int, int, int | None, bool, int, int, int, Mapping[str, Any], int, str | None, str]


def rows(spans: Sequence[FinishedSpan]) -> list[Row]:
    """Ended spans as ``Row`` tuples: what the export thread hands the exporter process."""
    out: list[Row] = []
    append = out.append
    for span in spans:
        context, parent, status, kind = span.context, span.parent, span.status, span.kind
        state = context[4]
        append(
            (
                span.name,
                context[0],
                context[1],
                None if parent is None else parent[1],
                parent is not None and parent[2],
                1
                if kind is _INTERNAL
                else 2
                if kind is _SERVER
                else 3
                if kind is _CLIENT
                else _KINDS[kind],
                span.start_time,
                span.end_time or 0,
                span.attributes,
                0 if status is UNSET else _STATUS[status.status_code],
                None if status is UNSET else status.description,
                "" if state is DEFAULT_TRACE_STATE else state.to_header(),
            )
        )
    return out


class SpanEncoder:
    """Ended spans → ``ExportTraceServiceRequest`` bytes, all under one resource and scope.
    One per exporting thread (its memos are not shared).

    What repeats from request to request is encoded once and remembered: a span name's field,
    and each attribute's ``KeyValue`` field by (key, value, type of the value) — a route, a
    tier, a model, token counts. A span's attributes are looked up in one pass of C loops
    (``map`` over ``zip``); only those not remembered are encoded, in Python."""

    def __init__(self, resource: Resource, scope: str) -> None:
        self._known: dict[tuple[str, Any, type], bytes] = {}
        self._names: dict[str, bytes] = {}
        pairs = b"".join(_key_value(1, k, v) for k, v in resource.attributes.items())
        self._resource = _field(1, pairs)  # ResourceSpans.resource
        if resource.schema_url:
            self._resource += _field(3, resource.schema_url.encode())
        self._scope = _field(1, _field(1, scope.encode()))

    def encode(self, spans: Sequence[FinishedSpan]) -> bytes:
        return self.encode_rows(rows(spans))

    def encode_rows(self, spans: Sequence[Row]) -> bytes:
        body = self._scope + b"".join([self._span(s) for s in spans])
        return _field(1, self._resource + _field(2, body))

    def _attributes(self, attributes: Mapping[str, Any]) -> list[bytes]:
        """The ``KeyValue`` fields of a span's attributes, in order."""
        values = attributes.values()
        # The type is part of the key: 1 == 1.0 == True, and each is written differently.
        keys = list(zip(attributes, values, map(type, values), strict=True))
        known = self._known
        try:
            fields: list[bytes | None] = list(map(known.get, keys))  # None: not remembered
        except TypeError:  # a value that cannot be a dict key (a list): encoded every time
            fields = [None] * len(keys)
        if None in fields:
            for i in compress(range(len(fields)), map(not_, fields)):
                key, value, kind = keys[i]
                fields[i] = encoded = _key_value(_SPAN_ATTRIBUTE, key, value)
                # Worth remembering: strings, booleans, integers and floats (not 0.0, which
                # would also answer for -0.0), except keys whose values never repeat.
                # A tuple of strings too (finish reasons, candidates): equal tuples of other
                # types may differ in their elements' types, as 1 and True do.
                if (
                    (kind in _REMEMBERED and (kind is not float or value))
                    or (kind is tuple and all(type(v) is str for v in value))
                ) and key not in _VARYING:
                    if len(known) >= _PAIRS_KEPT:
                        known.clear()  # forgotten all at once: the pairs in use come back
                    known[keys[i]] = encoded
        return cast("list[bytes]", fields)  # each None replaced above

    def _span(self, row: Row) -> bytes:
        (
            name,
            trace_id,
            span_id,
            parent_id,
            remote,
            kind,
            start,
            end,
            attributes,
            code,
            description,
            state,
        ) = row
        name_field = self._names.get(name)
        if name_field is None:
            name_field = _field(5, name.encode())
            if len(self._names) >= _PAIRS_KEPT:
                self._names.clear()
            self._names[name] = name_field
        # Span.trace_id and span_id (the 128-bit id as two big-endian halves): one pack.
        out = [_pack_ids(0x0A10, trace_id >> 64, trace_id & _LOW64, 0x1208, span_id)]
        if state:
            out.append(_field(3, state.encode()))
        if parent_id is not None:
            out.append(_pack_parent(0x2208, parent_id))  # Span.parent_span_id
        out.append(name_field)
        out.append(_KIND_FIELDS[kind])
        out.append(_pack_times(0x39, start, 0x41, end))
        if attributes:
            out += self._attributes(attributes)
        # The status is always written, as the SDK's encoder writes it (empty when unset).
        if code or description:
            body = _field(2, description.encode()) if description else b""
            if code:
                body += b"\x18" + _varint(code)
            out.append(_field(15, body))
        else:
            out.append(_NO_STATUS)
        out.append(_REMOTE_FLAGS if remote else _LOCAL_FLAGS)
        body = b"".join(out)
        size = len(body)  # Scope.spans: a span is 0.1-16 KB, its size two bytes
        if 0x80 <= size < 0x4000:
            return _pack_two(0x12, size & 0x7F | 0x80, size >> 7) + body
        return b"\x12" + (_SMALL[size] if size < 0x80 else _varint(size)) + body


Send = Callable[[Sequence[FinishedSpan]], bool]


class BatchExport:
    """A sink for ended spans: queued (never blocking the request), sent by one thread in
    batches every ``delay_s`` or as soon as a batch is full; ``shutdown`` sends the rest."""

    def __init__(
        self, send: Send, *, delay_s: float = 5.0, max_queue: int = 2048, batch: int = 512
    ) -> None:
        self._send = send
        self._delay_s = delay_s
        self._max_queue = max_queue
        self._batch = batch
        self._queue: collections.deque[FinishedSpan] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopping = False
        self._flushing = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, send: Send, environ: Mapping[str, str]) -> BatchExport:
        def number(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            try:
                value = int(raw) if raw else default
            except ValueError:
                value = default
            return value if value > 0 else default

        return cls(
            send,
            delay_s=number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000.0,
            max_queue=number("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            batch=number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        )

    def __call__(self, span: FinishedSpan) -> None:
        queue = self._queue
        size = len(queue)
        if size >= self._max_queue:
            if not self.dropped:
                log.warning(
                    "trace spans dropped: the export queue is full (OTEL_BSP_MAX_QUEUE_SIZE=%d); "
                    "the collector is slow or unreachable, or sample fewer traces",
                    self._max_queue,
                )
            self.dropped += 1
            return
        queue.append(span)
        if size + 1 == self._batch:  # once, as the queue fills a batch (an Event.set costs)
            self._wake.set()

    def _run(self) -> None:
        while True:
            full = self._wake.wait(self._delay_s)
            self._wake.clear()
            # Woken by a full batch: send full batches only (a remainder sent at once would
            # become a stream of tiny requests under load, each a whole HTTP round trip).
            # The schedule, a flush and the shutdown send everything.
            everything = not full or self._stopping or self._flushing
            self._flushing = False
            self._drain(everything)
            self._idle.set()
            if self._stopping:
                return

    def _drain(self, everything: bool) -> None:
        queue, batch = self._queue, self._batch
        # Everything queued now, not what arrives while it is sent: spans keep coming under
        # load, and chasing them would send a stream of tiny batches (a slow collector or a
        # slow process — valgrind — made exactly that). Full batches are always sent.
        # At shutdown no request is served any more: everything, to the last span.
        left = len(queue) if everything else 0
        while len(queue) >= batch or (left > 0 and queue) or (self._stopping and queue):
            take = min(batch, len(queue))
            left -= take
            spans = [queue.popleft() for _ in range(take)]
            try:
                self._send(spans)
            except Exception:
                log.exception("could not export %d trace spans", len(spans))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued now; True once sent (within ``timeout_s``)."""
        self._idle.clear()
        self._flushing = True
        self._wake.set()
        return self._idle.wait(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)


_FRAME = struct.Struct("<I")  # a frame on the exporter process's input: its size, then it


def write_frame(stream: Any, payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: Any) -> bytes | None:
    """The next frame, or None at the end of the stream (the gateway closed it)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    return payload if len(payload) == size else None


class ExporterProcess:
    """The OTLP/HTTP sender in a child process (``python -m gateway.otlp_process``), started
    at the first batch: each batch goes to it as one ``marshal``-ed frame of ``rows`` on its
    standard input; it encodes the batch, posts it with the SDK's client and logs what it
    could not send on its standard error (the gateway's). Closing its input (``close``, or this
    process ending) makes it send what it has and exit. If it exits early, the batch being
    written is lost (logged) and the next batch starts another."""

    def __init__(self, resource: Resource, scope: str, environ: Mapping[str, str]) -> None:
        self._header = marshal.dumps((dict(resource.attributes), resource.schema_url or "", scope))
        self._environ = dict(environ)
        self._process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            if process is not None:
                _let_go(process)
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.otlp_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=self._environ,
            )
            write_frame(process.stdin, self._header)
            self._process = process
        return process

    def send(self, spans: Sequence[FinishedSpan]) -> bool:
        payload = marshal.dumps(rows(spans))  # ValueError: a value marshal cannot write
        try:
            process = self._started()
            write_frame(process.stdin, payload)
        except OSError as exc:  # BrokenPipeError: it exited
            if self._process is not None:
                _let_go(self._process)
            log.warning(
                "the trace exporter process could not take %d spans (%s); they are lost, and "
                "the next batch starts it again",
                len(spans),
                exc,
            )
            self._process = None
            return False
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Close its input and wait (``timeout_s``) for it to send the rest and exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # it exited with a batch unread
                process.stdin.close()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("the trace exporter process did not finish in %.0f s: stopped", timeout_s)
            process.kill()
            process.wait()


def _let_go(process: subprocess.Popen[bytes]) -> None:
    """Close the input of an exporter process that exited (what was left in it is lost)."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if process.poll() is None:
        process.kill()
    process.wait()


def otlp_sender(
    resource: Resource, scope: str, environ: Mapping[str, str]
) -> tuple[Send, Callable[[], None]]:
    """Send batches through an ``ExporterProcess`` (its environment: ``environ``, where the
    SDK's client reads its ``OTEL_EXPORTER_OTLP_*`` settings); and how to close it."""
    exporter = ExporterProcess(resource, scope, environ)
    return exporter.send, exporter.close


SendRows = Callable[[Sequence[Row]], bool]


def http_sender(resource: Resource, scope: str) -> tuple[SendRows, Callable[[], None]]:
    """In the exporter process: encode batches of rows and post them with the SDK's OTLP/HTTP
    client (its settings from ``OTEL_EXPORTER_OTLP_*``, its retries); and how to close it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter()
    encoder = SpanEncoder(resource, scope)

    def send(batch: Sequence[Row]) -> bool:
        result = exporter._client.export(encoder.encode_rows(batch))
        if not result.success:
            log.warning("the trace collector refused or did not answer; %d spans lost", len(batch))
        return bool(result.success)

    return send, exporter.shutdown


def console_sender(resource: Resource) -> Send:
    """One JSON line per span on standard output (``OTEL_TRACES_EXPORTER=console``)."""
    service = resource.attributes.get("service.name")

    def send(spans: Sequence[FinishedSpan]) -> bool:
        for span in spans:
            line = {
                "name": span.name,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": format(span.context.span_id, "016x"),
                "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                "kind": span.kind.name,
                "duration_ms": ((span.end_time or span.start_time) - span.start_time) / 1e6,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes),
                "service": service,
            }
            sys.stdout.write(json.dumps(line, default=str) + os.linesep)
        sys.stdout.flush()
        return True

    return send

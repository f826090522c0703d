"""Ended spans to a collector: queued without blocking the request, sent in batches by one
thread to a separate exporter process (``python -m gateway.otlp_process``) that encodes them
(``gateway.otlp_wire``) and posts them through the SDK's OTLP/HTTP client.

Why a process: encoding (~5 µs a span) and the HTTP post (~4 µs a span through ``requests``)
held the gateway's GIL for ~30 µs of every traced request, about 3% of a request's CPU taken
from the event loop. The gateway's export thread now only turns a batch into plain tuples
(``otlp_wire.rows``) and writes them, ``marshal``-ed, to the exporter process's standard input,
which encodes and posts them; ``bench/README.md``, "Tracing", has the measurements.

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
from typing import Any

from opentelemetry.sdk.resources import Resource

from gateway.otlp_wire import Row, SpanEncoder, rows
from gateway.tracer import FinishedSpan

log = logging.getLogger(__name__)


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

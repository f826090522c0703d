"""The trace exporter process: ``python -m gateway.otlp_process``, started by the gateway's
``otlp_export.ExporterProcess`` with the gateway's environment.

Its standard input carries frames (``otlp_export.write_frame``): first the resource's attributes,
schema URL and scope name, then one batch of ended spans per frame, as ``otlp_wire.rows`` wrote
them with ``marshal`` (the same Python wrote and reads them: its own executable). Each batch is
encoded (``SpanEncoder``) and posted with the OpenTelemetry SDK's OTLP/HTTP client, which reads
``OTEL_EXPORTER_OTLP_*``. At the end of its input (the gateway closed it, or exited) it sends
what it has read and exits. SIGINT and SIGTERM are ignored: a Ctrl-C or a stop sent to the
whole process group must not lose the batches the gateway hands over as it drains.
"""

from __future__ import annotations

import logging
import marshal
import signal
import sys

from opentelemetry.sdk.resources import Resource

from gateway.otlp_export import http_sender, read_frame

log = logging.getLogger("tiergate.otlp_process")


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="tiergate trace exporter: %(message)s")
    stream = sys.stdin.buffer
    header = read_frame(stream)
    if header is None:
        return 0
    attributes, schema_url, scope = marshal.loads(header)
    send, stop = http_sender(Resource(attributes, schema_url or None), scope)
    try:
        while (frame := read_frame(stream)) is not None:
            try:
                send(marshal.loads(frame))
            except Exception:
                log.exception("could not export a batch of trace spans")
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""structlog set-up: JSON lines with the request id bound, and secrets scrubbed.

Keys never reach the log because nothing logs them; the redactor is the second line of defence
(a backend error message that echoes a header, say): every configured secret, and anything
shaped like a bearer token or provider key, is replaced before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

_KEY_SHAPES = re.compile(
    r"(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,}|(?i:bearer)\s+[A-Za-z0-9._\-~+/]{12,}=*"
)
REDACTED = "[redacted]"


class Redactor:
    """A structlog processor replacing secrets in every string value (nested too)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_SHAPES.sub(REDACTED, text)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._value(v) for v in value)
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._value(value)
        return event_dict


def configure_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    """Configure structlog for the process (logging is process-global by nature), and the
    standard library's ``logging`` (uvicorn's own records, the trace exporter's, libraries'
    warnings) to write the same lines, scrubbed the same way."""
    structlog.configure(
        processors=_processors(fmt, secrets),
        wrapper_class=_filtering(level),
        logger_factory=_factory(fmt),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)  # configured again (a test's app, a reload): one handler
    handler = _StderrHandler()
    *chain, _ = _processors(fmt, secrets)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *chain],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _text(fmt)],
        )
    )
    root.addHandler(handler)
    # Libraries log their routine at info (httpx a line per request): warnings and up only.
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))


class _StderrHandler(logging.Handler):
    """Each record as one line on the current ``sys.stderr``, in one write (as ``_factory``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def standalone_logger(level: str, fmt: str, secrets: Iterable[str]) -> Any:
    """A logger writing lines like the configured ones (to the current stderr) without touching
    the process's configuration: for what a command says before (or without) configuring it."""
    return structlog.wrap_logger(
        _factory(fmt)(),
        processors=_processors(fmt, secrets),
        wrapper_class=_filtering(level),
    )


def _processors(fmt: str, secrets: Iterable[str]) -> list[Any]:
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks are rendered to text first, so that the redactor scrubs them too.
        structlog.processors.format_exc_info,
        Redactor(secrets),
        renderer,
    ]


def _text(fmt: str) -> Any:
    """The renderer for the standard library's records: ``logging`` wants text, not bytes."""
    if fmt == "json":
        return structlog.processors.JSONRenderer(
            serializer=lambda obj, **kw: orjson.dumps(obj, **kw).decode()
        )
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def _factory(fmt: str) -> Any:
    # Each line goes out in one write(): several worker processes share stderr, and a line
    # written in two pieces (text, then newline) can interleave with another process's line.
    if fmt == "json":
        return structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    return structlog.WriteLoggerFactory(file=sys.stderr)


def _filtering(level: str) -> Any:
    return structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])

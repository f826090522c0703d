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


class StdlibScrubber(logging.Filter):
    """Scrubs a standard-library log record like the structlog lines: its message and its
    traceback (uvicorn's own "Exception in ASGI application" line, for one, which prints the
    exception the app's handler has already logged)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._redactor.scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.scrub(record.exc_text)  # formatters reuse it
        return True


def scrub_stdlib_logs(secrets: Iterable[str], names: Iterable[str] = ("uvicorn.error",)) -> None:
    """Scrub the records of these standard-library loggers (once each: a scrubber added before
    is replaced)."""
    values = tuple(secrets)
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, StdlibScrubber)]:
            logger.removeFilter(old)
        logger.addFilter(StdlibScrubber(values))


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
    """Configure structlog for the process (logging is process-global by nature)."""
    structlog.configure(
        processors=_processors(fmt, secrets),
        wrapper_class=_filtering(level),
        logger_factory=_factory(fmt),
        cache_logger_on_first_use=False,
    )


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


def _factory(fmt: str) -> Any:
    # Each line goes out in one write(): several worker processes share stderr, and a line
    # written in two pieces (text, then newline) can interleave with another process's line.
    if fmt == "json":
        return structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    return structlog.WriteLoggerFactory(file=sys.stderr)


def _filtering(level: str) -> Any:
    return structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])

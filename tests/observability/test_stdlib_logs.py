"""Records of the standard library's ``logging`` (uvicorn's own, the trace exporter's, a
library's warning) come out as the gateway's lines: one JSON object a line, secrets scrubbed,
like structlog's. Before, they went out as uvicorn's plain text or bare messages, unredacted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.log import REDACTED, configure_logging

SECRET = "pg-password-0123456789"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The process's logging as it was: these tests configure it onto capsys' stderr, which
    is closed once they end."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


@pytest.mark.usefixtures("root_logging")
def test_a_library_warning_is_a_scrubbed_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", [SECRET])
    capsys.readouterr()
    logging.getLogger("some.library").warning("cannot reach postgresql://app:%s@db/x", SECRET)
    logging.getLogger("some.library").info("routine: not shown")  # below warning
    try:
        raise RuntimeError(f"with {SECRET} in it")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("some.library", "warning"),
        ("uvicorn.error", "error"),
    ]
    assert records[0]["event"] == f"cannot reach postgresql://app:{REDACTED}@db/x"
    assert "RuntimeError" in records[1]["exception"]
    assert SECRET not in "\n".join(lines)


@pytest.mark.usefixtures("root_logging")
def test_configured_twice_a_record_is_written_once(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", [])
    configure_logging("warning", "json", [])
    capsys.readouterr()
    logging.getLogger("some.library").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.usefixtures("root_logging")
def test_an_exception_logged_by_the_gateway_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    """The traceback becomes text before the redactor runs, so its message is scrubbed too."""
    configure_logging("info", "json", [SECRET])
    capsys.readouterr()
    try:
        raise RuntimeError(f"connect to postgresql://app:{SECRET}@db/x failed")
    except RuntimeError:
        structlog.get_logger("tiergate.test").exception("ledger_failed")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["event"] == "ledger_failed"
    assert f"postgresql://app:{REDACTED}@db/x" in record["exception"]
    assert SECRET not in line

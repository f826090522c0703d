"""The log's second line of defence: configured secrets and key-shaped strings are scrubbed from
every line, the traceback of a logged exception included (an exception's message may quote a
URL with its password, or an upstream's reply echoing a key)."""

from __future__ import annotations

import json

import pytest

from gateway.log import REDACTED, standalone_logger

SECRET = "planted-db-password-7f3e1c"
KEY_SHAPED = "sk-planted0123456789abcdef"


def test_a_logged_exception_is_scrubbed_like_the_rest(capfd: pytest.CaptureFixture[str]) -> None:
    log = standalone_logger("INFO", "json", [SECRET])
    try:
        raise RuntimeError(f"connect failed for postgresql://app:{SECRET}@db/x with {KEY_SHAPED}")
    except RuntimeError:
        log.exception("unhandled_error", path="/v1/chat/completions")
    err = capfd.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert line["event"] == "unhandled_error"
    assert "RuntimeError: connect failed" in line["exception"]  # the traceback is kept...
    assert SECRET not in err  # ...without the secret
    assert KEY_SHAPED not in err
    assert REDACTED in line["exception"]

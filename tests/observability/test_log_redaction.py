"""The log's second line of defence: configured secrets and key-shaped strings are scrubbed from
every line, the traceback of a logged exception included (an exception's message may quote a
URL with its password, or an upstream's reply echoing a key)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gateway.log import REDACTED, standalone_logger
from gateway.server import uvicorn_config
from gateway.settings import Settings

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


def test_uvicorns_own_traceback_is_scrubbed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """uvicorn prints "Exception in ASGI application" and the traceback of an error the app's
    handler re-raised (Starlette always re-raises), outside structlog: the server the gateway
    configures scrubs the configured secrets from it too."""
    settings = Settings(
        policy=tmp_path / "policy.yaml",
        admin_key=SecretStr(SECRET),
        database_url=SecretStr(f"sqlite:///{tmp_path / 'ledger.db'}"),
    )
    uvicorn_config(FastAPI(), settings)
    try:
        raise ValueError(f"the admin key {SECRET} did not parse")
    except ValueError as exc:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc)
    err = capfd.readouterr().err
    assert "Exception in ASGI application" in err
    assert "ValueError: the admin key" in err
    assert SECRET not in err

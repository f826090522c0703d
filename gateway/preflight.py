"""Checks before a server starts, on settings that parsed: the ledger's local folders (the
outbox's and the journal's) exist and take a file, and a gateway that listens beyond loopback
has keys. Each failure names the variable to change and how."""

from __future__ import annotations

import tempfile
from pathlib import Path

from gateway.settings import Settings


class SettingError(ValueError):
    """A setting that cannot be used; ``str()`` is ``VARIABLE: what is wrong and what to do``."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def check_local_paths(settings: Settings) -> None:
    """Before a server with the ledger starts: the outbox's and the journal's folders exist (made
    now if missing) and take a file; else ``SettingError`` naming the variable to change."""
    outbox = settings.outbox_path
    if outbox.is_dir():
        raise SettingError(
            "TIERGATE_OUTBOX_PATH",
            f"{outbox} is a folder; give a file path in a writable local folder, e.g. "
            f"{outbox / 'outbox.db'}",
        )
    _writable_dir(
        outbox.parent,
        "TIERGATE_OUTBOX_PATH",
        f"the folder {outbox.parent} for the outbox {outbox.name}",
        "set TIERGATE_OUTBOX_PATH to a file in a writable local folder "
        "(default: .tiergate/outbox.db)",
    )
    journal = settings.journal_path()
    if settings.journal_dir is None:
        what = f"the journal's default folder {journal} (beside TIERGATE_OUTBOX_PATH)"
    else:
        what = f"the journal folder {journal}"
    _writable_dir(
        journal,
        "TIERGATE_JOURNAL_DIR",
        what,
        "set TIERGATE_JOURNAL_DIR to a writable folder on local disk",
    )


def _writable_dir(path: Path, variable: str, what: str, fix: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, FileExistsError):
            reason = "a file of that name is in the way"
        raise SettingError(variable, f"cannot use {what} ({reason}); {fix}") from None


class ExposureError(RuntimeError):
    """Refusing to listen on a non-loopback address without API keys."""


def check_exposure(settings: Settings) -> None:
    # With an admin key every route needs a key (virtual keys are made with it).
    if not settings.client_keys() and settings.admin_key is None and not settings.loopback_only:
        raise ExposureError(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach it "
            f"could spend your providers' credit. Set TIERGATE_API_KEYS (and TIERGATE_ADMIN_KEY), "
            f"or listen on 127.0.0.1"
        )

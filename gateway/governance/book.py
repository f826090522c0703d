"""The key book: every key the gateway accepts, by SHA-256 digest, served from memory.

Bootstrap keys (``TIERGATE_API_KEYS``) are fixed at start. Virtual keys are re-read from the
ledger database every ``refresh_s`` (default 2 s) by each replica, so a key created, rotated or
revoked anywhere is honoured everywhere within that interval (plus one database round trip).
When the database cannot be read, the last map read stays in use and the failure is logged once.
A replica that has never read them (it started while the database did not answer) cannot tell
a virtual key from a wrong one: ``unread`` says so, and the key check answers 503, not 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.governance import store
from gateway.governance.grants import Grant

log = structlog.get_logger("tiergate.keys")


def key_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class KeyBook:
    def __init__(self, bootstrap: Mapping[str, str], admin_key: str | None) -> None:
        self._static = {key_digest(k): Grant(key_id=i, name=i) for k, i in bootstrap.items()}
        self._virtual: dict[bytes, Grant] = {}
        self.admin = key_digest(admin_key) if admin_key else None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False
        self._expected = False  # virtual keys live in a ledger database (refresh was called)
        self.loaded = asyncio.Event()

    @property
    def open(self) -> bool:
        """No key of any kind: the loopback-only mode where every route is open."""
        return not self._static and not self._virtual and self.admin is None

    @property
    def unread(self) -> bool:
        """Virtual keys are kept in the ledger database but were never read from it: an
        unknown key may be one of them."""
        return self._expected and not self.loaded.is_set()

    def state(self) -> Literal["ok", "stale", "unread", "off"]:
        """For readiness: the virtual keys read (``ok``), the last read kept while the
        database does not answer (``stale``), never read (``unread``), or none (``off``: no
        ledger)."""
        if not self._expected:
            return "off"
        if not self.loaded.is_set():
            return "unread"
        return "stale" if self._failing else "ok"

    def lookup(self, digest: bytes) -> Grant | None:
        return self._static.get(digest) or self._virtual.get(digest)

    def knows(self, digest: bytes) -> bool:
        return digest in self._static or digest in self._virtual

    def replace(self, grants: Mapping[str, Grant]) -> None:
        self._virtual = {bytes.fromhex(d): g for d, g in grants.items()}

    async def refresh(self, engine: Engine) -> None:
        self._expected = True
        try:
            grants = await asyncio.to_thread(store.load, engine)
        except SQLAlchemyError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "keys_unreadable",
                    error=str(exc).splitlines()[0][:200],
                    detail="serving with the keys read last; retrying",
                )
            return
        if self._failing:
            self._failing = False
            log.info("keys_readable_again", keys=len(grants))
        self.replace(grants)
        self.loaded.set()

    def start(self, engine: Engine, refresh_s: float) -> None:
        stop = self._stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), refresh_s)
                if not stop.is_set():
                    await self.refresh(engine)

        self._task = asyncio.get_running_loop().create_task(loop(), name="key-book")

    async def aclose(self) -> None:
        """Stop refreshing; a read in progress finishes first (its connection goes back to
        the pool before the ledger's engine is closed)."""
        if self._task is not None:
            self._stop.set()
            await self._task


def now() -> datetime:
    return datetime.now(UTC)

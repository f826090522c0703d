"""A lean Redis connection for the governance gate: one socket, commands pipelined on it, RESP2
written and read by hand, one Lua script called by its SHA.

Why not redis-py here: its per-command machinery (the pool, the command packer, the response
callbacks) costs ~110–190 µs of Python per ``EVALSHA`` on this project's hardware, more than
the round trip itself, and the request path of a governed request makes such a call (see
bench/README.md, "Governance on the request path"). This connection does the same in tens of
microseconds: a command is one ``bytes.join`` and a write, a reply is resolved on the future
waiting first in line.

* ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) and ``unix:///path?db=N``;
  ``AUTH`` and ``SELECT`` are sent when the connection is made.
* Every reply is bounded by ``timeout_s`` and every connect by ``connect_timeout_s``. A command
  that times out aborts the connection (its replies could no longer be matched to their
  commands) and fails every command waiting on it; the next command connects afresh.
* ``NOSCRIPT`` (a restarted or flushed Redis) is answered by sending the script itself with
  ``EVAL``, which caches it again.

Failures are raised as ``OSError`` (refused, reset, closed), ``TimeoutError`` or ``ReplyError``
(an error reply, a Lua error among them): ``UNAVAILABLE`` names all three for the callers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit


class ReplyError(Exception):
    """Redis answered a command with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


UNAVAILABLE: tuple[type[BaseException], ...] = (OSError, TimeoutError, ReplyError)

Arg = bytes | str | int | float


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(args), _items(args))


def _items(args: Sequence[Arg]) -> bytes:
    out = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


@functools.lru_cache(maxsize=8192)
def _key(name: str) -> bytes:
    """A key as a bulk string (the same keys come back call after call)."""
    data = name.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply from ``buf[pos:]`` and where the next one starts; ``_Incomplete`` when
    the buffer ends first. An error reply is returned (not raised) as a ``ReplyError``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos], buf[pos + 1 : end]
    if kind == 0x3A:  # ':' integer
        return int(line), end + 2
    if kind == 0x24:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            raise _Incomplete
        return buf[end + 2 : stop], stop + 2
    if kind == 0x2A:  # '*' array
        count = int(line)
        if count < 0:
            return None, end + 2
        items: list[Any] = []
        pos = end + 2
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 0x2B:  # '+' simple string
        return line, end + 2
    if kind == 0x2D:  # '-' error
        return ReplyError(line.decode(errors="replace")), end + 2
    raise ReplyError(f"unexpected RESP reply type {chr(kind)!r}: is this a Redis server?")


class _Wire(asyncio.Protocol):
    """One socket: commands go out in order, replies are matched to them in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.buffer = b""
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos = 0
        waiting = self.waiting
        while waiting and pos < len(buf):
            try:
                reply, pos = parse(buf, pos)
            except _Incomplete:
                break
            future = waiting.popleft()
            if not future.done():  # its caller may have been cancelled
                future.set_result(reply)
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(exc or ConnectionResetError("Redis closed the connection"))

    def fail(self, exc: BaseException) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def abort(self, exc: BaseException) -> None:
        self.lost = True
        self.fail(exc)
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True, slots=True)
class Address:
    """Where Redis is and how to log in, from a ``redis://`` URL."""

    host: str | None
    port: int
    path: str | None  # a Unix socket
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{parts.scheme!r} is not a Redis URL scheme: write redis://host:port/db, "
                "rediss://host:port/db or unix:///path/to/socket?db=N"
            )
        query = parse_qs(parts.query)
        db_text = query["db"][0] if "db" in query else parts.path.lstrip("/") or "0"
        if parts.scheme == "unix":
            db_text = query["db"][0] if "db" in query else "0"
        if not db_text.isdigit():
            raise ValueError(f"Redis URL {parts.scheme}://…: {db_text!r} is not a database number")
        return cls(
            host=None if parts.scheme == "unix" else parts.hostname or "localhost",
            port=parts.port or 6379,
            path=parts.path if parts.scheme == "unix" else None,
            db=int(db_text),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
        )


class Connection:
    """One pipelined connection, made on first use and again after a failure."""

    def __init__(self, url: str, *, timeout_s: float, connect_timeout_s: float) -> None:
        self._address = Address.parse(url)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._wire: _Wire | None = None
        self._connecting = asyncio.Lock()
        self._scripts: dict[bytes, bytes] = {}  # sha → script

    def script(self, source: str) -> bytes:
        """The SHA that ``evalsha`` calls ``source`` by."""
        body = source.encode()
        sha = hashlib.sha1(body, usedforsecurity=False).hexdigest().encode()
        self._scripts[sha] = body
        return sha

    def evalsha_now(
        self, sha: bytes, keys: Sequence[str], args: Sequence[Arg]
    ) -> asyncio.Future[Any] | None:
        """``evalsha`` without a coroutine: the call goes out now and the future holds its
        reply (a ``ReplyError`` is its result, ``NOSCRIPT`` among them: then call ``evalsha``);
        None when there is no connection yet (call ``evalsha``, which makes one)."""
        wire = self._wire
        if wire is None or wire.lost:
            return None
        return self._request(wire, self._evalsha(b"EVALSHA", sha, keys, args))

    async def evalsha(self, sha: bytes, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a script (``script`` registered it) with its keys and arguments."""
        reply = await self._send(self._evalsha(b"EVALSHA", sha, keys, args))
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await self._send(self._evalsha(b"EVAL", self._scripts[sha], keys, args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    @staticmethod
    def _evalsha(verb: bytes, script: bytes, keys: Sequence[str], args: Sequence[Arg]) -> bytes:
        head = b"*%d\r\n" % (len(keys) + len(args) + 3)
        items = [head, _items([verb, script, len(keys)]), *map(_key, keys), _items(args)]
        return b"".join(items)

    async def command(self, *args: Arg) -> Any:
        reply = await self._send(encode(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def _send(self, data: bytes) -> Any:
        wire = self._wire
        if wire is None or wire.lost:
            wire = await self._connect()
        return await self._request(wire, data)

    def _request(self, wire: _Wire, data: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        wire.waiting.append(future)
        assert wire.transport is not None
        wire.transport.write(data)
        timer = loop.call_later(self._timeout_s, self._expired, wire, future)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _expired(self, wire: _Wire, future: asyncio.Future[Any]) -> None:
        if not future.done():
            wire.abort(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))

    async def _connect(self) -> _Wire:
        async with self._connecting:
            wire = self._wire
            if wire is not None and not wire.lost:
                return wire  # another caller connected while this one waited
            address = self._address
            loop = asyncio.get_running_loop()
            if address.path is not None:
                made = loop.create_unix_connection(_Wire, address.path)
            else:
                context = ssl.create_default_context() if address.tls else None
                made = loop.create_connection(_Wire, address.host or "", address.port, ssl=context)
            try:
                _, fresh = await asyncio.wait_for(made, self._connect_timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"Redis did not accept a connection within {self._connect_timeout_s:g} s"
                ) from None
            self._wire = fresh
            try:
                if address.password is not None:
                    login = [address.password]
                    if address.username is not None:
                        login.insert(0, address.username)
                    await self.command(b"AUTH", *login)
                if address.db:
                    await self.command(b"SELECT", address.db)
            except BaseException:
                self._wire = None
                fresh.abort(ConnectionResetError("Redis refused the connection's set-up"))
                raise
            return fresh

    async def aclose(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None and wire.transport is not None:
            wire.lost = True
            wire.fail(ConnectionResetError("the connection was closed"))
            wire.transport.close()

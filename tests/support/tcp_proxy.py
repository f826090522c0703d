"""A TCP proxy a test can cut and restore, to make a server (PostgreSQL) unreachable and back
without touching the server itself.

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/db"
        ...                      # traffic flows through proxy.port
        await proxy.cut()        # listener closed, every live connection reset: refused/broken
        ...
        await proxy.restore()    # listening again on the same port; new connections go through
        await proxy.freeze()     # connections stay open, nothing is forwarded: a frozen server
        await proxy.thaw()       # what was held back flows again

It runs on the test's event loop, so the loop must be running while clients use it (an async
test; clients on worker threads, such as the ledger writer's, are fine). ``cut()`` aborts live
connections (an RST, like a crashed server or a dropped link), so a client mid-query gets an
error at once rather than waiting for a timeout; while cut, connecting is refused at once.
``freeze()`` is the other failure: connecting succeeds and bytes are accepted (the proxy's
kernel acknowledges them, as a stopped server's does), but no answer comes until ``thaw()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

CHUNK = 64 * 1024


class TcpProxy:
    """Forward ``host:port`` (a free port chosen at start) to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.accepted = 0  # connections accepted since start, for tests that want to know
        self._port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def port(self) -> int:
        """The port clients connect to (the same one across ``cut()`` / ``restore()``)."""
        if not self._port:
            raise RuntimeError("the proxy is not started: use `async with TcpProxy(...)`")
        return self._port

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> TcpProxy:
        await self.restore()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cut()

    async def restore(self) -> None:
        """Listen (again) on the proxy's port. Does nothing when already listening."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def freeze(self) -> None:
        """Hold every byte in both directions (open connections and new ones) until ``thaw``."""
        self._flowing.clear()

    async def thaw(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        """Stop listening and reset every live connection. Does nothing when already cut."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        # Aborted transports end the pipes, so the handlers finish by themselves; cancelling
        # them would make asyncio log the CancelledError of each (Python 3.11's streams).
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._transports.add(client_w.transport)
        self.accepted += 1
        upstream_w: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # frozen: accepted, never connected onward
            try:
                upstream_r, upstream_w = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return  # the target is down too: the client sees its connection reset
            self._transports.add(upstream_w.transport)
            pipes = [
                asyncio.create_task(_pipe(client_r, upstream_w, self._flowing)),
                asyncio.create_task(_pipe(upstream_r, client_w, self._flowing)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._transports.discard(writer.transport)
                    writer.transport.abort()
            self._handlers.discard(task)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    """Copy bytes one way until either side ends (holding them while frozen)."""
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            await flowing.wait()
            writer.write(data)
            await writer.drain()

"""One gateway process's uvicorn server: the configuration every process serves with, and
``tiergate serve`` with a single process (``gateway.workers`` runs several)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from gateway.http.drain import Drain
from gateway.listening import OPS_PORT_VARIABLE, bind
from gateway.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


def run_single(app: FastAPI, settings: Settings) -> None:
    """``tiergate serve`` with one process. The ports are bound here, before the server
    starts: a taken port is a ``BindError`` before the gateway opens anything (or logs
    ``gateway_started``). With an ops port, one server listens on both ports (the app tells
    them apart by the local port: ``ApiKeys``)."""
    sockets = [bind(settings.host, settings.port, listen=True, reuse_port=False)]
    try:
        if settings.ops_port is not None:
            sockets.append(
                bind(
                    settings.host,
                    settings.ops_port,
                    listen=True,
                    reuse_port=False,
                    variable=OPS_PORT_VARIABLE,
                )
            )
        gateway_server(app, settings).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def gateway_server(app: FastAPI, settings: Settings) -> uvicorn.Server:
    """uvicorn's server for the app, whose shutdown also starts the app's ``Drain``: the
    streams still open a little before TIERGATE_DRAIN_S runs out end with an error event that
    says so, rather than being cut when uvicorn cancels them at its end."""
    import uvicorn

    drain: Drain = app.state.drain

    # Defined here: uvicorn is imported only by the commands that serve.
    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            drain.begin(settings.drain_s)
            await super().shutdown(sockets)

    return DrainingServer(uvicorn_config(app, settings))


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go through gateway.log: JSON lines, scrubbed
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=settings.drain_s,
        proxy_headers=False,  # tiergate is the edge; trust no forwarded headers by default
    )

"""The ports ``tiergate serve`` listens on (the main port and the ops port), bound before the
server starts, so a port that cannot be used fails at once with a ``BindError`` that names the
setting and what to do, rather than inside uvicorn or a worker."""

from __future__ import annotations

import errno
import socket

PORT_VARIABLE = "TIERGATE_PORT / --port"
OPS_PORT_VARIABLE = "TIERGATE_OPS_PORT"


class BindError(RuntimeError):
    """A port cannot be listened on; the message says which setting and what to do."""


def bind(
    host: str,
    port: int,
    *,
    listen: bool,
    reuse_port: bool = True,
    variable: str = PORT_VARIABLE,
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_problem(host, port, variable, exc)) from None
    return sock


def check_port_free(host: str, port: int, variable: str = PORT_VARIABLE) -> None:
    """Fail if anything listens on ``port``: a socket with SO_REUSEPORT (what the workers bind)
    would share the port with another gateway of the same user instead of failing."""
    bind(host, port, listen=False, reuse_port=False, variable=variable).close()


def _bind_problem(host: str, port: int, variable: str, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host!r}: no such address ({exc.strerror}); set TIERGATE_HOST / "
            f"--host to an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} is already in use ({variable}); stop the other process or pick "
            f"another port"
        )
    if exc.errno == errno.EACCES:
        return (
            f"no permission to listen on port {port} ({variable}): ports below 1024 need root "
            f"or CAP_NET_BIND_SERVICE; pick a port above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}: not an address of this machine; set TIERGATE_HOST / "
            f"--host to one of its addresses (127.0.0.1, or 0.0.0.0 for all)"
        )
    return f"cannot listen on {host} port {port} ({variable}): {exc.strerror or exc}"

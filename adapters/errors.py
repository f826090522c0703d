"""The errors an adapter may raise. Nothing else crosses the adapter boundary.

    BackendError                 something went wrong talking to a backend
     ├── BackendUnavailable      not reachable, not running, or the model is not there
     ├── BackendTimeout          no answer within the time allowed
     ├── BackendRateLimited      the backend asked us to slow down (carries retry_after)
     ├── BackendRejected         the backend refused this request (bad input, auth, too long)
     └── BackendBadResponse      the backend answered something we could not read

Every message says what happened *and what to do about it*: the router logs them and ops read
them. Adapters raise them with ``raise ... from exc`` so the vendor exception stays in the
traceback for debugging, but the type the caller sees is always one of these.

``retryable`` tells the router whether another attempt (on this or another backend) may help.
``status_code`` is the upstream's HTTP status when it answered with one (a 5xx says the server
failed and a retry on the same backend may help; a missing one says nothing either way).

Every adapter maps foreign exceptions the same way: its sub-package's ``errors.py`` has
``as_backend_error(exc, *, backend, config, ...) -> BackendError``, and its backend wraps each
call upstream in ``with translated(self._error):``, where ``_error`` applies that function with
the backend's name and configuration. Conditions an adapter detects itself (closed, busy, a
stream cut short) are raised as ``BackendError``s directly and pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType


class BackendError(Exception):
    """Base class: an adapter could not produce an answer."""

    retryable: bool = True

    def __init__(self, backend: str, message: str, *, status_code: int | None = None) -> None:
        self.backend = backend
        self.message = message
        self.status_code = status_code
        super().__init__(f"backend {backend!r}: {message}")


class BackendUnavailable(BackendError):
    """The backend cannot be reached, is not running, or lacks the model."""


class BackendTimeout(BackendError):
    """The backend did not answer within the time allowed."""


class BackendRateLimited(BackendError):
    """The backend asked us to slow down; ``retry_after`` is in seconds when it said."""

    def __init__(
        self,
        backend: str,
        message: str,
        retry_after: float | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(backend, message, status_code=status_code)


class BackendRejected(BackendError):
    """The backend refused this request; sending it again unchanged will not help."""

    retryable = False

    def __init__(self, backend: str, message: str, status_code: int | None = None) -> None:
        super().__init__(backend, message, status_code=status_code)


class BackendBadResponse(BackendError):
    """The backend answered, but not in a shape we can read."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``-converted) header value.

    Only the delta-seconds form is honoured; an HTTP date or garbage gives ``None`` so the
    caller falls back to its own back-off rather than trusting a clock it cannot check.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class translated:
    """``with translated(as_backend_error):`` an exception the block raises leaves as the
    ``BackendError`` that ``as_backend_error`` maps it to, with the original chained
    (``raise ... from exc``).

    A ``BackendError`` passes through unchanged, and so does what is not an ``Exception``
    (cancellation, ``GeneratorExit`` when a stream is closed early, ``KeyboardInterrupt``).
    A class rather than ``@contextmanager``: it wraps every backend call and stream step, and a
    generator per ``with`` costs several times more.
    """

    __slots__ = ("_as_backend_error",)

    def __init__(self, as_backend_error: Callable[[Exception], BackendError]) -> None:
        self._as_backend_error = as_backend_error

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, BackendError):
            raise self._as_backend_error(exc) from exc

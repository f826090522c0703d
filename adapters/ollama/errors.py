"""How the ollama adapter turns failures into ``BackendError``s: what Ollama reports
(``OllamaError``: an HTTP error status, or an error line mid-stream), replies we cannot read
(``MalformedReply``), requests it cannot carry (``UnsupportedInput``), and httpx's own errors
(refused or dropped connections, timeouts). Every message says what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from adapters.config import OllamaConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)


class UnsupportedInput(ValueError):
    """A request this backend cannot carry (the adapter turns it into ``BackendRejected``)."""


class MalformedReply(ValueError):
    """A reply that is not the JSON Ollama's API documents; the message says what is wrong."""


class OllamaError(Exception):
    """A failure Ollama reported: ``error`` is its own text; ``status_code`` is the HTTP status,
    or ``None`` for an error line in the middle of a stream."""

    def __init__(self, error: str, status_code: int | None = None) -> None:
        self.error = error
        self.status_code = status_code
        super().__init__(error if status_code is None else f"{error} (status code: {status_code})")


def error_from(status_code: int, body: str) -> OllamaError:
    """The error of a reply with an HTTP error status: the body's ``error`` text when it is
    Ollama's JSON, else the body itself (a proxy's page, or Go's "404 page not found")."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, Mapping) else None
    return OllamaError(error if isinstance(error, str) else body, status_code)


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def as_backend_error(exc: Exception, *, backend: str, config: OllamaConfig) -> BackendError:
    """Our error for a failed call to Ollama, saying what happened and what to do."""
    url = config.base_url
    model = config.model
    if isinstance(exc, OllamaError):
        return _reported(exc, backend=backend, config=config)
    if isinstance(exc, UnsupportedInput):
        return BackendRejected(backend, str(exc), status_code=400)
    if isinstance(exc, httpx.TimeoutException):
        what = "could not connect" if isinstance(exc, httpx.ConnectTimeout) else "did not answer"
        return BackendTimeout(
            backend,
            f"Ollama at {url} {what} within timeout_s={config.timeout_s}; loading a large model "
            f"can take minutes: raise `timeout_s` of this backend, keep the model loaded "
            f"(`prewarm: true`, a longer `keep_alive`), or lower max_tokens",
        )
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return BackendUnavailable(
            backend,
            f"Ollama is not reachable at {url}: start it with `ollama serve` (or the Ollama "
            f"app), or fix `base_url` of this backend",
        )
    if isinstance(exc, httpx.HTTPError):
        return BackendUnavailable(
            backend,
            f"the connection to Ollama at {url} failed ({type(exc).__name__}: {_short(exc)}); "
            f"check that the server is still running (its log says why it stopped)",
        )
    if isinstance(exc, MalformedReply):
        return BackendBadResponse(
            backend,
            f"Ollama at {url} answered something that is not /api/chat JSON for {model!r} "
            f"({_short(exc)}); check that `base_url` is Ollama's own address (not its /v1 API "
            f"or a proxy that rewrites bodies)",
        )
    return BackendUnavailable(
        backend,
        f"the call to Ollama at {url} failed ({type(exc).__name__}: {_short(exc)}); check that "
        f"the server is running and what its log says",
    )


def _reported(exc: OllamaError, *, backend: str, config: OllamaConfig) -> BackendError:
    url = config.base_url
    model = config.model
    status = exc.status_code
    said = _short(exc.error)
    if "not found" in said and ("model" in said or "pull" in said):
        return BackendUnavailable(
            backend,
            f"Ollama at {url} does not have the model {model!r} ({said}): run "
            f"`ollama pull {model}` on that server, or fix `model` of this backend "
            f"(`ollama list` shows the installed ones)",
        )
    if status is None:  # an error line in the middle of a stream
        return BackendUnavailable(
            backend,
            f"Ollama at {url} failed while generating with {model!r} ({said}); its server log "
            f"says why (often the model ran out of memory: try a smaller model or `num_ctx`)",
        )
    if status == 404:
        return BackendUnavailable(
            backend,
            f"Ollama's API was not found at {url} ({said}): `base_url` must be the server's "
            f"root, such as http://127.0.0.1:11434, without /api or /v1",
        )
    if status in (429, 503):
        return BackendRateLimited(
            backend,
            f"Ollama at {url} is busy ({status}: {said}): retry shortly, let the policy fall "
            f"back to another backend, or raise OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the "
            f"server",
            status_code=status,
        )
    if status in (401, 403):
        return BackendRejected(
            backend,
            f"Ollama at {url} refused to authorise the request ({status}: {said}): a remote or "
            f"proxied Ollama needs its key in the OLLAMA_API_KEY environment variable of the "
            f"gateway",
            status_code=status,
        )
    if 400 <= status < 500:
        return BackendRejected(
            backend,
            f"Ollama at {url} rejected the request for {model!r} ({status}: {said}); sending it "
            f"again will not help: check the model supports chat and the options are valid",
            status_code=status,
        )
    return BackendUnavailable(
        backend,
        f"Ollama at {url} failed ({status}: {said}); its server log says why (often the model "
        f"does not fit in memory: try a smaller model or `num_ctx`)",
        status_code=status,
    )

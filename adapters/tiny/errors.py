"""How the tiny adapter turns what llama.cpp and the chat template raise into ``BackendError``s.

The same builtin exception means different things at different steps (a ``ValueError`` from
loading the GGUF is not one from building a grammar), so the backend re-raises each step's
failure as one of the exceptions below, ``from`` the original; ``as_backend_error`` maps them.
"""

from __future__ import annotations

from pathlib import Path

from adapters.config import TinyConfig
from adapters.errors import (
    BackendError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)


class LoadFailed(Exception):
    """llama.cpp could not load the GGUF at ``path`` (the cause is chained)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(str(path))


class TemplateRefused(Exception):
    """The model's chat template refused the messages (the cause is chained)."""


class GrammarRefused(Exception):
    """llama.cpp could not build a grammar from the response format (the cause is chained)."""


class Cancelled(Exception):
    """The consumer went away; the worker stopped between tokens."""


def _cause(exc: BaseException) -> BaseException:
    return exc.__cause__ or exc


def as_backend_error(exc: Exception, *, backend: str, config: TinyConfig) -> BackendError:
    """Our error for a failure of the in-process model, saying what to do about it."""
    if isinstance(exc, Cancelled):
        return BackendTimeout(backend, "the client went away; generation stopped")
    if isinstance(exc, LoadFailed):
        return BackendUnavailable(
            backend,
            f"llama.cpp could not load {exc.path}: {_cause(exc)}. Check that it is a GGUF file "
            f"this llama-cpp-python supports and that `n_ctx` fits in memory",
        )
    if isinstance(exc, TemplateRefused):
        return BackendRejected(
            backend,
            f"the model's chat template refused these messages ({_cause(exc)}); check the roles "
            f"and their order",
        )
    if isinstance(exc, GrammarRefused):
        return BackendRejected(
            backend,
            f"llama.cpp cannot turn this response_format schema into a grammar ({_cause(exc)}); "
            f"simplify the schema or use json_object",
            status_code=400,
        )
    if isinstance(exc, FileNotFoundError):  # the default model's package is not installed
        return BackendUnavailable(backend, str(exc))
    return BackendUnavailable(
        backend,
        f"llama.cpp failed running {config.model!r} ({type(exc).__name__}: {exc}); if it "
        f"persists, check memory and the GGUF, or let the policy fall back to another tier",
    )

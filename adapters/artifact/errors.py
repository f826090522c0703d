"""How the artifact adapter turns what torch, transformers and the chat template raise into
``BackendError``s. Each step re-raises its failure as one of the exceptions below (``from`` the
original) where the builtin type alone would be ambiguous; ``as_backend_error`` maps them."""

from __future__ import annotations

from adapters.artifact.extra import MissingExtra
from adapters.artifact.files import ArtifactFileError
from adapters.config import ArtifactConfig
from adapters.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable


class DeviceUnavailable(RuntimeError):
    """The configured device is not present on this machine."""


class NoChatTemplate(ValueError):
    """The tokenizer carries no chat template."""


class LoadFailed(Exception):
    """transformers could not load the artifact (the cause is chained)."""


class TemplateRefused(Exception):
    """The tokenizer's chat template refused the messages (the cause is chained)."""


class Cancelled(Exception):
    """The consumer went away; the worker stopped between tokens."""


def _cause(exc: BaseException) -> BaseException:
    return exc.__cause__ or exc


def as_backend_error(exc: Exception, *, backend: str, config: ArtifactConfig) -> BackendError:
    """Our error for a failure of the in-process model, saying what to do about it."""
    if isinstance(exc, Cancelled):
        return BackendTimeout(backend, "the client went away; generation stopped")
    if isinstance(exc, MissingExtra | ArtifactFileError):
        return BackendUnavailable(backend, str(exc))
    if isinstance(exc, LoadFailed):
        return BackendUnavailable(
            backend,
            f"transformers could not load {config.path} ({type(_cause(exc)).__name__}: "
            f"{_cause(exc)}); check that save_pretrained wrote it (config.json, safetensors, "
            f"tokenizer files) and that this transformers knows its architecture",
        )
    if isinstance(exc, NoChatTemplate):
        return BackendUnavailable(
            backend,
            f"the tokenizer in {config.path} has no chat template, so chat messages cannot be "
            f"formatted: save a chat model's tokenizer, or set tokenizer.chat_template before "
            f"save_pretrained",
        )
    if isinstance(exc, DeviceUnavailable):
        return BackendUnavailable(backend, f"{exc}: set `device: auto` or `device: cpu`")
    if isinstance(exc, TemplateRefused):
        return BackendRejected(
            backend,
            f"the model's chat template refused these messages ({_cause(exc)}); check the roles "
            f"and their order",
        )
    return BackendUnavailable(
        backend,
        f"torch failed running {config.path} ({type(exc).__name__}: {exc}); if it persists, "
        f"check memory and the artifact, or let the policy fall back to another tier",
    )

"""Backends the gateway can route to. Never imports ``gateway``.

The registry maps a policy's ``type:`` to an import string, so a backend's heavy dependencies
(llama_cpp, litellm, torch) load only when a policy actually uses that type.
"""

from __future__ import annotations

import importlib
from typing import cast

from adapters.base import Backend
from adapters.config import BackendConfig

BACKEND_TYPES: dict[str, str] = {
    "tiny": "adapters.tiny.backend:TinyBackend",
    "ollama": "adapters.ollama.backend:OllamaBackend",
    "openai_compat": "adapters.openai_compat.backend:OpenAICompatBackend",
    "remote": "adapters.remote.backend:RemoteBackend",
    "artifact": "adapters.artifact.backend:ArtifactBackend",
    "fake": "adapters.fake:FakeBackend",
}


def backend_class(type_name: str) -> type:
    """The class behind a backend ``type:``; an unknown type lists the known ones."""
    try:
        target = BACKEND_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(BACKEND_TYPES))
        raise ValueError(f"unknown backend type {type_name!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    return cast(type, getattr(importlib.import_module(module_name), class_name))


def load_backend(name: str, config: BackendConfig) -> Backend:
    """Build the backend a policy entry describes. Nothing is contacted or loaded yet."""
    return cast(Backend, backend_class(config.type)(name, config))


__all__ = ["BACKEND_TYPES", "Backend", "backend_class", "load_backend"]

"""Ollama's native API (see ``backend``)."""

from adapters.ollama.backend import OllamaBackend

__all__ = ["OllamaBackend"]

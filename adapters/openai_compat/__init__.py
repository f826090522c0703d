"""Any OpenAI-compatible server (see ``backend``)."""

from adapters.openai_compat.backend import OpenAICompatBackend

__all__ = ["OpenAICompatBackend"]

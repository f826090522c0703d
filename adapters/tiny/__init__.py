"""The tiny tier: a GGUF model in-process through llama-cpp-python (see ``backend``)."""

from adapters.tiny.backend import TinyBackend

__all__ = ["TinyBackend"]

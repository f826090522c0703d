"""Hosted chat APIs through litellm (see ``backend``)."""

from adapters.remote.backend import RemoteBackend

__all__ = ["RemoteBackend"]

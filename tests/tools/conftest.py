"""Fixtures for the offline tools' tests: the demo runs against real gateways (``serve``)."""

from tests.http.conftest import serve

__all__ = ["serve"]

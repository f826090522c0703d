"""The optional ``torch`` extra: is it installed, and the error that says how to install it.

``missing()`` asks the import system where the packages are without importing them (torch
takes seconds to import), so a policy can be checked quickly; ``require()`` imports them.
"""

from __future__ import annotations

import importlib
import importlib.util

INSTALL = "pip install 'tiergate[torch]'"
PACKAGES: tuple[str, ...] = ("torch", "transformers", "safetensors")


class MissingExtra(ImportError):
    """torch, transformers or safetensors is not installed."""

    def __init__(self, package: str) -> None:
        self.package = package
        super().__init__(
            f"backend type 'artifact' needs {package}, which is not installed: install the "
            f"torch extra with `{INSTALL}` (torch 2.13.0, transformers, safetensors)"
        )


def missing() -> str | None:
    """The first package of the extra that is not installed, or ``None``."""
    for package in PACKAGES:
        try:
            if importlib.util.find_spec(package) is None:
                return package
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken one
            return package
    return None


def require() -> None:
    """Import the extra's packages; raise ``MissingExtra`` naming the install command."""
    for package in PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise MissingExtra(package) from exc

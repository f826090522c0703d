"""Read, validate and compile a policy file: YAML, then the schema (``schema``; its errors said
by ``schema_errors``), then the checks across sections and files (``checks``, ``canary_check``,
``cascade``), then the runtime ``Policy``. Every problem is reported as
``file: path.to.field: what is wrong and how to fix it`` (``problems``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import yaml
from pydantic import ValidationError

from adapters.config import RemoteConfig, with_paths_resolved
from gateway.policy.adaptive import adaptive_settings, base_kind
from gateway.policy.canary_check import canary_problems
from gateway.policy.cascade import cascade_problems, compile_cascade
from gateway.policy.checks import extra_problems, file_problems, reference_problems
from gateway.policy.lines import with_lines
from gateway.policy.model import Policy, Route, Tier
from gateway.policy.pricing import PriceBook
from gateway.policy.problems import PolicyError, Problem
from gateway.policy.schema import BaselineSpec, PolicyFile, PricingSpec
from gateway.policy.schema_errors import problems_beside_unknown_fields, validation_problems
from gateway.policy.timeouts import effective_timeouts
from gateway.scoring.heuristic import DEFAULT_WEIGHTS, ScorerWeights
from gateway.scoring.learned import ArtifactError, LearnedScorer, load_scorer
from gateway.scoring.v2 import V2Scorer, load_v2

S = TypeVar("S", LearnedScorer, V2Scorer)


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
        problems = validation_problems(exc, raw)
        problems += problems_beside_unknown_fields(exc, raw)
        raise PolicyError(source, with_lines(problems, data)) from exc
    problems = list(reference_problems(spec))
    problems += extra_problems(spec)
    if not problems:  # the canary's checks assume the rest of the file is consistent
        problems = [Problem(path, message) for path, message in canary_problems(spec, base_dir)]
        problems += [Problem(path, text) for path, text in cascade_problems(spec, base_dir)]
    problems += file_problems(spec, base_dir)
    if problems:
        raise PolicyError(source, with_lines(problems, data))
    try:
        return _compile(spec, source=source, digest=policy_hash(data), base_dir=base_dir)
    except PolicyError as exc:  # a scorer artifact that cannot be read
        raise PolicyError(source, with_lines(list(exc.problems), data)) from None


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
        learned=_scorer(spec, "learned", load_scorer, source=source, base_dir=base_dir),
        v2=_scorer(spec, "v2", load_v2, source=source, base_dir=base_dir),
        adaptive=adaptive_settings(spec.scorer),
        label_judge=spec.scorer.judge if spec.scorer.kind == "adaptive" else None,
    )


def _scorer(
    spec: PolicyFile,
    kind: str,
    load: Callable[[Path | None], S],
    *,
    source: str,
    base_dir: Path,
) -> S | None:
    """The policy's scorer artifact when its scorer is of ``kind`` (learned or v2), loaded now:
    a policy whose artifact cannot be read is refused, naming where it is set."""
    if base_kind(spec.scorer) != kind:
        return None
    path = None if spec.scorer.artifact is None else base_dir / spec.scorer.artifact
    try:
        return load(path)
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

"""The policy file's schema (the YAML edge, so pydantic; every model forbids unknown fields).

A policy names its backends, orders its tiers cheapest first with a score ceiling each, and
names routes (the request's ``model`` field picks one). References between sections are checked
in ``gateway.policy.checks`` so every problem is reported with its path in the file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.config import BackendConfig
from gateway.policy.canary import CanarySpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationSpec(_Strict):
    """A cascade's calibration written inline (the artifact's ``weights``, ``bias``, ``points``)."""

    weights: dict[str, float] = Field(
        min_length=1, description="raw = bias + Σ weight × feature (min, p10, p25, mean, last)"
    )
    bias: float = 0.0
    points: tuple[tuple[float, float], ...] = Field(
        min_length=2, description="the isotonic table: [raw, confidence] pairs, both rising"
    )


class CascadeSpec(_Strict):
    """Confidence cascade: this tier answers first; below ``min_confidence`` the next tier
    of the route answers instead (README "Confidence cascade")."""

    min_confidence: float = Field(
        ge=0.0, le=1.0, description="keep the answer when its calibrated confidence is ≥ this"
    )
    calibration: str | CalibrationSpec | None = Field(
        default=None,
        description="a JSON artifact from `tiergate cascade-calibrate` (relative to the policy), "
        "or the table inline; default: the one shipped for SmolLM2-135M-Instruct",
    )
    streamed: Literal["buffer", "off"] = Field(
        default="buffer",
        description="buffer: a streamed request waits for the whole cheap answer (its time to "
        "first token becomes the cheap tier's generation time); off: streams never cascade",
    )

    @field_validator("streamed", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``off`` as false (and ``on`` as true)."""
        if isinstance(value, bool):
            return "buffer" if value else "off"
        return value


class TierSpec(_Strict):
    """A tier: requests scoring at most ``max_score`` go here (if no cheaper tier took them)."""

    name: str = Field(pattern=NAME_PATTERN)
    backends: tuple[str, ...] = Field(min_length=1, description="in order of preference")
    max_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="omit on the last tier: it takes the rest"
    )
    cascade: CascadeSpec | None = Field(
        default=None, description="answer here first, escalate to the next tier when unsure"
    )


Fallback = Literal["up_then_down", "up", "none"]


class RouteSpec(_Strict):
    """A route, named by the request's ``model`` field."""

    tiers: tuple[str, ...] | None = Field(
        default=None, description="the tiers this route may use (default: all)"
    )
    tier: str | None = Field(default=None, description="always this tier; no scoring")
    cache: bool = Field(default=True, description="false: never answer this route from the cache")
    fallback: Fallback = Field(
        default="up_then_down",
        description="after the chosen tier's backends fail: try the more capable tiers (up), "
        "then the cheaper ones (up_then_down), or nothing (none)",
    )


class LabelJudgeSpec(_Strict):
    """kind adaptive: labels from a judge. A sampled request answered by a tier below the
    route's strongest is also sent, in the background, to the next stronger tier, and the judge
    grades the cheaper answer against the stronger one (README "How routing learns")."""

    backend: str = Field(description="the judge: a backend of this policy (a strong model)")
    sample: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="share of the requests a cheaper tier answered that are judged (2 calls each)",
    )
    max_per_minute: int = Field(
        default=30, ge=1, description="judged samples started a minute, at most (per replica)"
    )
    max_usd_per_day: float = Field(
        default=1.0,
        ge=0,
        description="the judged samples' calls (stronger tier and judge) spend at most this a "
        "UTC day, per replica (unpriced backends count as 0)",
    )
    concurrency: int = Field(default=2, ge=1, le=64, description="judged samples at once")
    queue: int = Field(
        default=32, ge=0, description="judged samples waiting; beyond this they are dropped"
    )


class FeedbackScopeSpec(_Strict):
    """kind adaptive: whose ``/v1/feedback`` labels move a request's score."""

    scope: Literal["team", "shared"] = Field(
        default="team",
        description="team: a feedback label moves only the routing of the team that rated it "
        "(a key without a team is a team of its own); shared: every team's (for callers who "
        "trust each other). A judge's labels are always shared",
    )


class ScorerSpec(_Strict):
    version: Literal[1] = 1
    kind: Literal["v1", "learned", "v2", "adaptive"] = Field(
        default="v1",
        description="v1: weighted cues (bias, weights); learned: a trained model whose score is "
        "P(strong model needed) (see tiergate train-scorer); v2: a linear model over the "
        "prompt's embedding and the v1 cues (tiergate train-scorer --kind v2)",
    )
    artifact: str | None = Field(
        default=None,
        description="kind learned or v2: the model file, relative to the policy (default: the "
        "one shipped with tiergate)",
    )
    bias: float = Field(default=0.0, ge=-1.0, le=1.0)
    weights: dict[str, float] = Field(
        default_factory=dict, description="per feature; unset features keep their default"
    )
    # kind adaptive: k nearest labelled neighbours over prompt embeddings, shrunk toward the
    # base scorer's score (README "How routing learns"); these fields are its settings.
    base: Literal["v1", "learned", "v2"] = Field(
        default="v1", description="kind adaptive: the scorer it starts from and shrinks toward"
    )
    k: int = Field(default=32, ge=1, le=1024, description="kind adaptive: neighbours consulted")
    prior: float = Field(
        default=4.0,
        gt=0,
        description="kind adaptive: how many close neighbours weigh as much as the base score",
    )
    min_similarity: float = Field(
        default=0.3,
        ge=-1.0,
        lt=1.0,
        description="kind adaptive: neighbours less similar (cosine) than this do not count",
    )
    store_embeddings: bool = Field(
        default=True,
        description="kind adaptive: keep the embeddings of requests answered by "
        "cheaper tiers so feedback can label them (false: learn nothing new, store nothing)",
    )
    refresh_s: float = Field(
        default=5.0, gt=0, description="kind adaptive: how often labels are re-read"
    )
    max_labels: int = Field(
        default=20_000, ge=1, description="kind adaptive: the newest labels kept in memory"
    )
    sample_ttl_h: float = Field(
        default=168.0, gt=0, description="kind adaptive: how long an embedding waits for feedback"
    )
    judge: LabelJudgeSpec | None = Field(
        default=None, description="kind adaptive: also learn from a judge's verdicts (sampled)"
    )
    feedback: FeedbackScopeSpec = Field(
        default_factory=FeedbackScopeSpec,
        description="kind adaptive: whose feedback labels count (default: the rating team's only)",
    )


class TimeoutSpec(_Strict):
    total_s: float = Field(default=60.0, gt=0, description="deadline for all attempts together")
    per_try_s: float = Field(
        default=30.0, gt=0, description="one attempt, until the answer (or a stream's 1st chunk)"
    )
    stream_idle_s: float = Field(
        default=30.0, gt=0, description="longest silence allowed inside a started stream"
    )
    cold_start_s: float = Field(
        default=120.0,
        ge=0,
        description="extra time allowed for a backend that has not finished loading its model",
    )


class RetrySpec(_Strict):
    """Retries on the same backend (429 and 5xx) before the next candidate is tried."""

    per_backend: int = Field(
        default=2, ge=0, le=10, description="retries on one backend after its first try (0: off)"
    )
    base_ms: float = Field(
        default=25.0, gt=0, description="first back-off's ceiling; doubles each retry (full jitter)"
    )
    max_ms: float = Field(
        default=2000.0,
        gt=0,
        description="longest wait before a retry; a longer Retry-After moves on at once",
    )
    budget_ratio: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="retries allowed per first try on a backend (0.2: at most ~20% extra calls)",
    )
    min_per_s: float = Field(
        default=1.0, ge=0, description="retries per second allowed per backend beyond the ratio"
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if self.base_ms > self.max_ms:
            raise ValueError(
                f"base_ms ({self.base_ms:g}) is above max_ms ({self.max_ms:g}): lower base_ms "
                f"or raise max_ms"
            )
        return self


class BreakerSpec(_Strict):
    failures: int = Field(default=5, ge=1, description="consecutive failures that open it")
    cooldown_s: float = Field(default=30.0, gt=0, description="how long it stays open")


class HealthSpec(_Strict):
    interval_s: float = Field(default=15.0, gt=0, description="how often backends are probed")


class LimitSpec(_Strict):
    max_tokens: int = Field(default=32768, ge=1, description="largest max_tokens accepted")
    max_messages: int = Field(default=1024, ge=1)
    feedback_per_key_per_minute: int | None = Field(
        default=60,
        ge=1,
        le=2**31 - 1,
        description="POST /v1/feedback calls one key may make a minute (every replica's "
        "together when they share Redis); past it a 429 with Retry-After. null: no limit. The "
        "admin key is not limited",
    )


class HardwareSpec(_Strict):
    """What a local box costs while it serves: its hourly cost and its electricity."""

    usd_per_hour: float = Field(
        ge=0, description="amortised purchase (price / lifetime hours) or rent, per hour"
    )
    watts: float = Field(default=0.0, ge=0, description="power draw while serving")
    usd_per_kwh: float = Field(default=0.0, ge=0, description="energy price")
    concurrency: float = Field(
        default=1.0, gt=0, description="requests it serves at once (busy time is shared)"
    )


class BackendPriceSpec(_Strict):
    """A backend's price: per million tokens, or the hardware it runs on."""

    usd_per_1m_input: float | None = Field(default=None, ge=0)
    usd_per_1m_output: float | None = Field(default=None, ge=0)
    usd_per_1m_cached_input: float | None = Field(default=None, ge=0)
    hardware: HardwareSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> BackendPriceSpec:
        tokens = self.usd_per_1m_input is not None or self.usd_per_1m_output is not None
        if tokens == (self.hardware is not None):
            raise ValueError(
                "give either usd_per_1m_input and usd_per_1m_output, or hardware (not both)"
            )
        if tokens and (self.usd_per_1m_input is None or self.usd_per_1m_output is None):
            raise ValueError("give both usd_per_1m_input and usd_per_1m_output")
        return self


class BaselineSpec(_Strict):
    """The model everything would otherwise have gone to (for the counterfactual cost)."""

    model: str | None = Field(default=None, description="litellm's name, e.g. openai/gpt-4o")
    usd_per_1m_input: float | None = Field(default=None, ge=0)
    usd_per_1m_output: float | None = Field(default=None, ge=0)
    usd_per_1m_cached_input: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _priced(self) -> BaselineSpec:
        if self.model is None and (self.usd_per_1m_input is None or self.usd_per_1m_output is None):
            raise ValueError("give a model (priced from litellm's map) or both usd_per_1m prices")
        return self


# A 2-vCPU cloud VM (~$0.05/h) drawing 65 W at $0.15/kWh: the assumption for local backends
# the policy does not price, so their cost is an honest estimate rather than $0.
DEFAULT_LOCAL_HARDWARE = HardwareSpec(usd_per_hour=0.05, watts=65.0, usd_per_kwh=0.15)


class PricingSpec(_Strict):
    baseline: BaselineSpec | None = Field(
        default=None, description="default: the first remote backend of the last tier"
    )
    backends: dict[str, BackendPriceSpec] = Field(default_factory=dict)
    local_default: HardwareSpec = DEFAULT_LOCAL_HARDWARE


class ResponseCacheSpec(_Strict):
    """The exact response cache: same route, messages and sampling parameters, same answer."""

    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0)
    deterministic_only: bool = Field(
        default=True,
        description="cache only requests with temperature 0 or a seed (false: every request; "
        "a sampled answer is then replayed instead of a fresh sample)",
    )
    scope: Literal["team", "key", "shared"] = Field(
        default="team",
        description="who may be answered with a cached answer: the same team (a key without a "
        "team is its own), the same key, or anyone (shared: one team's prompts and answers "
        "reach the others)",
    )
    per_key: bool = Field(default=False, description="the older spelling of scope: key")

    @model_validator(mode="before")
    @classmethod
    def _per_key_is_scope_key(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("per_key") is True:
            scope = data.get("scope", "key")
            if scope != "key":
                raise ValueError(
                    f"per_key: true is the older spelling of scope: key, and contradicts "
                    f"scope: {scope}; keep only scope"
                )
            data = {**data, "scope": "key"}
        return data


class PrefixSpec(_Strict):
    """The prefix registry: which replica recently served which prompt prefix."""

    enabled: bool = True
    block_tokens: int = Field(default=64, ge=8, le=4096, description="prefix granularity")
    ttl_s: float = Field(default=900.0, gt=0, description="how long a prefix counts as warm")
    load_margin: int = Field(
        default=4,
        ge=0,
        description="prefer the replica with the warm prefix unless it has this many more "
        "requests in flight than the least busy one",
    )


class CacheSpec(_Strict):
    responses: ResponseCacheSpec = ResponseCacheSpec()
    prefixes: PrefixSpec = PrefixSpec()


class PolicyFile(_Strict):
    """The whole file."""

    version: Literal[1]
    backends: dict[str, BackendConfig] = Field(min_length=1)
    tiers: tuple[TierSpec, ...] = Field(min_length=1, description="cheapest first")
    routes: dict[str, RouteSpec] = Field(default_factory=lambda: {"auto": RouteSpec()})
    default_route: str = "auto"
    scorer: ScorerSpec = ScorerSpec()
    timeouts: TimeoutSpec = TimeoutSpec()
    breaker: BreakerSpec = BreakerSpec()
    retries: RetrySpec = RetrySpec()
    health: HealthSpec = HealthSpec()
    limits: LimitSpec = LimitSpec()
    pricing: PricingSpec = PricingSpec()
    cache: CacheSpec = CacheSpec()
    canary: CanarySpec | None = Field(
        default=None, description="a candidate backend tried against a tier's stable one"
    )

"""What a request cost, and what it would have cost on the baseline model. Never silently zero:
every cost says where it came from (``cost_source``), and a price we do not know is ``None``
(reported as unpriced), not 0.

* remote backends: litellm's bundled price map (read from its JSON file, without importing
  litellm), cached input tokens at the cache-read price; the policy may override it;
* local backends (tiny, ollama, openai_compat): the policy's price per million tokens, or the
  box's cost per hour plus power draw times energy price, charged for the time the request kept the
  box busy (server time minus model load time, divided by how many requests it serves at once);
  without either, the policy's ``local_default`` hardware profile, flagged as a default;
* baseline: the same tokens at the baseline model's prices. Savings = baseline - cost. Cached
  prompt tokens are read at the baseline's cache-read price only when a hosted provider cached
  them (a remote backend, whose provider the baseline's would match); a local server's reuse of
  its own KV cache is no discount the baseline model would have given.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import Timings, Usage
from adapters.config import BackendConfig, FakeConfig, RemoteConfig

if TYPE_CHECKING:  # annotations only: gateway.policy imports this module while it loads
    from gateway.policy.schema import BackendPriceSpec, HardwareSpec, PricingSpec

MILLION = Decimal(1_000_000)
HOUR_MS = Decimal(3_600_000)
KILO = Decimal(1000)


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per token."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    source: str
    cache_write: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        cached_rate = self.cached_input if self.cached_input is not None else self.input
        write_rate = self.cache_write if self.cache_write is not None else self.input
        return (
            (usage.prompt_tokens - cached - written) * self.input
            + cached * cached_rate
            + written * write_rate
            + usage.completion_tokens * self.output
        )


@dataclass(frozen=True, slots=True)
class HardwarePrice:
    """USD per busy millisecond of the box."""

    per_ms: Decimal
    source: str

    def cost(self, timings: Timings) -> Decimal:
        busy = timings.server_ms if timings.server_ms is not None else timings.latency_ms
        busy -= timings.load_ms or 0.0
        return Decimal(str(max(busy, 0.0))) * self.per_ms


Rule = TokenPrice | HardwarePrice | None


@dataclass(frozen=True, slots=True)
class Priced:
    cost: Decimal | None
    source: str
    baseline: Decimal | None


@cache
def litellm_prices() -> Mapping[str, Mapping[str, Any]]:
    """litellm's bundled price map, read as JSON (importing litellm would take seconds)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        data: dict[str, Mapping[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _per_token(per_million: float | None) -> Decimal | None:
    return None if per_million is None else Decimal(str(per_million)) / MILLION


def litellm_price(model: str) -> TokenPrice | None:
    """The map's entry for ``provider/model`` (or the bare model name)."""
    prices = litellm_prices()
    entry = prices.get(model) or prices.get(model.split("/", 1)[-1])
    if not entry:
        return None
    try:
        inp = Decimal(str(entry["input_cost_per_token"]))
        out = Decimal(str(entry["output_cost_per_token"]))
    except KeyError:
        return None
    cached = entry.get("cache_read_input_token_cost")
    written = entry.get("cache_creation_input_token_cost")  # 5-minute writes (Anthropic's default)
    return TokenPrice(
        inp,
        out,
        None if cached is None else Decimal(str(cached)),
        "litellm",
        None if written is None else Decimal(str(written)),
    )


def _token_price(spec: BackendPriceSpec | Any, source: str) -> TokenPrice:
    return TokenPrice(
        input=_per_token(spec.usd_per_1m_input) or Decimal(0),
        output=_per_token(spec.usd_per_1m_output) or Decimal(0),
        cached_input=_per_token(spec.usd_per_1m_cached_input),
        source=source,
    )


def hardware_price(spec: HardwareSpec, source: str) -> HardwarePrice:
    per_hour = Decimal(str(spec.usd_per_hour)) + (
        Decimal(str(spec.watts)) / KILO * Decimal(str(spec.usd_per_kwh))
    )
    return HardwarePrice(per_hour / HOUR_MS / Decimal(str(spec.concurrency)), source)


def rule_for(name: str, config: BackendConfig, pricing: PricingSpec) -> Rule:
    spec = pricing.backends.get(name)
    if spec is not None:
        if spec.hardware is not None:
            return hardware_price(spec.hardware, "hardware")
        return _token_price(spec, "policy")
    if isinstance(config, FakeConfig):
        return None  # scripted answers cost nothing real; reported as unpriced, not $0
    if isinstance(config, RemoteConfig):
        return litellm_price(config.model)
    return hardware_price(pricing.local_default, "default-hardware")


def baseline_price(pricing: PricingSpec) -> TokenPrice | None:
    spec = pricing.baseline
    if spec is None:
        return None
    if spec.usd_per_1m_input is not None:
        return _token_price(spec, "policy")
    return litellm_price(spec.model) if spec.model else None


def baseline_name(pricing: PricingSpec) -> str | None:
    """What the ledger rows name as the baseline their ``baseline_cost_usd`` was priced at:
    its model, or its prices when the policy gives prices and no model."""
    spec = pricing.baseline
    if spec is None:
        return None
    if spec.model:
        return spec.model
    return f"unnamed (${spec.usd_per_1m_input:g} in, ${spec.usd_per_1m_output:g} out per 1M tokens)"


@dataclass(frozen=True, slots=True)
class PriceBook:
    """The prices of one policy: a rule per backend and the baseline."""

    rules: Mapping[str, Rule]
    baseline: TokenPrice | None
    provider_cached: frozenset[str] = frozenset()  # remote backends: a provider's prompt cache
    baseline_model: str | None = None  # what the baseline is called in the ledger's rows

    @classmethod
    def build(cls, pricing: PricingSpec, backends: Mapping[str, BackendConfig]) -> PriceBook:
        return cls(
            rules={name: rule_for(name, cfg, pricing) for name, cfg in backends.items()},
            baseline=baseline_price(pricing),
            provider_cached=frozenset(
                name for name, cfg in backends.items() if isinstance(cfg, RemoteConfig)
            ),
            baseline_model=baseline_name(pricing),
        )

    def baseline_cost(self, backend: str, usage: Usage) -> Decimal | None:
        """What ``usage`` would have cost on the baseline model; cached prompt tokens at its
        cache-read price only when ``backend`` is a hosted provider's (a local KV cache saves
        the box time, not a price the baseline model would have given)."""
        if self.baseline is None:
            return None
        if backend not in self.provider_cached:
            usage = replace(usage, cached_tokens=0, cache_write_tokens=0)
        return self.baseline.cost(usage)

    def price(self, backend: str, usage: Usage, timings: Timings | None) -> Priced:
        baseline = self.baseline_cost(backend, usage)
        rule = self.rules.get(backend)
        if rule is None:
            return Priced(None, "unpriced", baseline)
        if isinstance(rule, TokenPrice):
            return Priced(rule.cost(usage), rule.source, baseline)
        if timings is None:
            return Priced(None, "unpriced", baseline)
        return Priced(rule.cost(timings), rule.source, baseline)

    def held(self, backend: str, ms: float) -> Priced | None:
        """What ``ms`` of ``backend``'s machine cost when it is priced by machine time (a try
        that timed out held the box that long, working, and produced nothing: no baseline);
        None for a backend priced by its tokens, or not at all."""
        rule = self.rules.get(backend)
        if not isinstance(rule, HardwarePrice):
            return None
        return Priced(rule.cost(Timings(latency_ms=ms)), rule.source, Decimal(0))

    def unpriced(self) -> list[str]:
        return [name for name, rule in self.rules.items() if rule is None]

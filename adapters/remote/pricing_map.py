"""A hosted model's list prices and context window, from litellm's bundled price map.

litellm ships ``model_prices_and_context_window_backup.json``; with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (set by ``adapters._offline``) it reads that file instead
of fetching the live one, so a lookup never touches the network. Prices are USD per token as
litellm stores them (floats); the ledger turns them into ``Decimal`` via ``str()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one hosted model costs and how much it reads. ``None``: the map does not say."""

    model: str
    input_usd_per_token: float | None = None
    output_usd_per_token: float | None = None
    cache_read_usd_per_token: float | None = None
    context_window: int | None = None

    @property
    def known(self) -> bool:
        """Whether the map priced both input and output for this model."""
        return self.input_usd_per_token is not None and self.output_usd_per_token is not None


def _number(info: Mapping[str, Any], key: str) -> float | None:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(info: Mapping[str, Any], key: str) -> int | None:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def price_from_info(model: str, info: Mapping[str, Any]) -> ModelPrice:
    """A ``ModelPrice`` from one entry of litellm's map (``get_model_info`` or ``model_cost``)."""
    return ModelPrice(
        model=model,
        input_usd_per_token=_number(info, "input_cost_per_token"),
        output_usd_per_token=_number(info, "output_cost_per_token"),
        cache_read_usd_per_token=_number(info, "cache_read_input_token_cost"),
        context_window=_count(info, "max_input_tokens"),
    )


def lookup_price(litellm: Any, model: str, provider: str | None = None) -> ModelPrice:
    """Prices of ``model`` (litellm's ``provider/model`` form) from the already-imported
    ``litellm`` module's bundled map; every field ``None`` when the model is not in it."""
    try:
        info = litellm.get_model_info(model=model, custom_llm_provider=provider)
    except Exception:  # litellm raises a bare Exception for "not mapped yet"
        return ModelPrice(model=model)
    if not isinstance(info, Mapping):
        return ModelPrice(model=model)
    return price_from_info(model, info)

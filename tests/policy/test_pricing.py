"""Prices of hosted tokens: cache reads and cache writes at their own rates."""

from __future__ import annotations

from decimal import Decimal

from adapters.base import Usage
from gateway.policy.pricing import TokenPrice, litellm_price


def test_cache_reads_and_writes_are_priced_at_their_rates() -> None:
    """Of 2,000 prompt tokens, 500 read from the cache and 1,000 written to it: each part at its
    rate (input 1e-6, read 1e-7, write 1.25e-6), plus 100 output tokens at 5e-6."""
    price = TokenPrice(
        input=Decimal("1e-6"),
        output=Decimal("5e-6"),
        cached_input=Decimal("1e-7"),
        source="test",
        cache_write=Decimal("1.25e-6"),
    )
    usage = Usage(
        prompt_tokens=2000, completion_tokens=100, cached_tokens=500, cache_write_tokens=1000
    )
    # 500 x 1e-6 + 500 x 1e-7 + 1000 x 1.25e-6 + 100 x 5e-6 = 0.0005 + 0.00005 + 0.00125 + 0.0005
    assert price.cost(usage) == Decimal("0.0023")


def test_litellm_map_gives_anthropic_cache_write_prices() -> None:
    """An Anthropic model's cache-write price comes from litellm's map."""
    price = litellm_price("anthropic/claude-haiku-4-5")
    assert price is not None
    assert price.cache_write is not None
    assert price.cache_write > price.input

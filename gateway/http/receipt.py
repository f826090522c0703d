"""A request's receipt as ``x-request-id`` and ``x-tiergate-*`` response headers."""

from __future__ import annotations

from gateway.pipeline import Receipt


def receipt_headers(receipt: Receipt) -> dict[str, str]:
    headers = {"x-request-id": receipt.request_id, "x-tiergate-policy": receipt.policy}
    if receipt.route is not None:
        headers["x-tiergate-route"] = receipt.route
        if receipt.complexity is not None:
            headers["x-tiergate-complexity"] = f"{receipt.complexity:.3f}"
        elif receipt.pinned:
            headers["x-tiergate-complexity"] = "pinned"
    if receipt.tier is not None:
        headers["x-tiergate-tier"] = receipt.tier
    if receipt.backend is not None:
        headers["x-tiergate-backend"] = receipt.backend
    if receipt.fallbacks:
        headers["x-tiergate-fallbacks"] = str(receipt.fallbacks)
    if receipt.cache is not None:
        headers["x-tiergate-cache"] = receipt.cache
    if receipt.cost is not None:
        headers["x-tiergate-cost-usd"] = f"{receipt.cost:.12f}"
    if receipt.baseline is not None:
        headers["x-tiergate-baseline-cost-usd"] = f"{receipt.baseline:.12f}"
    if receipt.cascade is not None:
        headers["x-tiergate-cascade"] = receipt.cascade.decision
        headers["x-tiergate-confidence"] = f"{receipt.cascade.confidence:.3f}"
    if receipt.budget is not None:
        headers["x-tiergate-budget"] = receipt.budget
    for name, value in receipt.limits:
        headers[name] = value
    return headers

"""What a client reads when the gate refuses it (429, OpenAI's shape): which limit of which key
or team it reached and when to retry, or which budget is spent, what is left, what the request
may cost at least and when the budget resets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from gateway.errors import TooManyRequests
from gateway.governance.budgets import Hold, from_nano
from gateway.governance.rates import RateVerdict


def rate_limited(check: RateVerdict) -> TooManyRequests:
    kind, _, rest = (check.limited_by or "key::requests").partition(":")
    who, _, what = rest.rpartition(":")
    if check.retry_after_s is None:
        how = "this request alone asks for more tokens than the limit allows: lower max_tokens"
    else:
        how = f"retry after {check.retry_after_s:.1f} s"
    return TooManyRequests(
        f"rate limit reached: {kind} {who!r} is at its {what} per minute limit; {how}",
        code="rate_limit_exceeded",
        retry_after=check.retry_after_s,
    )


def exhausted(holds: Sequence[Hold], left: Sequence[int], needed: int) -> TooManyRequests:
    index = min(range(len(holds)), key=lambda i: left[i]) if left else 0
    hold = holds[index]
    room = max(0, left[index]) if left else 0
    a = hold.allowance
    per = "in total" if hold.resets is None else f"per {a.period}"
    when = (
        "it does not reset (raise it or use another key)"
        if hold.resets is None
        else f"it resets at {hold.resets.isoformat()}"
    )
    return TooManyRequests(
        f"budget exceeded: {a.kind} {a.id!r} has a budget of {usd(from_nano(hold.limit))} "
        f"{per}, {usd(from_nano(room))} is left and this request may cost up to "
        f"{usd(from_nano(needed))} even on the cheapest tier; {when}",
        code="budget_exceeded",
        retry_after=None
        if hold.resets is None
        else max(1.0, (hold.resets - datetime.now(UTC)).total_seconds()),
    )


def usd(amount: Decimal) -> str:
    """Dollars as a person reads them: cents at least, and three significant figures below a
    dollar, so a sub-cent budget's figures do not all print as $0.000000 (``$0.000001``,
    ``$0.0153``, ``$0.05``, ``$12.35``)."""
    if amount == 0:
        return "$0.00"
    places = max(2, 2 - amount.adjusted())  # adjusted(): the first significant digit's place
    text = f"{amount:.{places}f}"
    if places > 2:
        whole, _, part = text.partition(".")
        text = f"{whole}.{part.rstrip('0').ljust(2, '0')}"
    return f"${text}"

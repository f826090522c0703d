"""What a caller is allowed: a key's and its team's allowances, as the request path reads them.

A ``Grant`` is made from a virtual key's row (and its team's) or from a bootstrap key in
``TIERGATE_API_KEYS`` (no limits). Frozen: the key book swaps whole maps when it refreshes.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, get_args

from gateway.errors import Forbidden

Period = Literal["day", "week", "month", "total"]
OnExhausted = Literal["step_down", "reject"]
PERIODS: tuple[str, ...] = get_args(Period)
ON_EXHAUSTED: tuple[str, ...] = get_args(OnExhausted)


@dataclass(frozen=True, slots=True)
class Allowance:
    """A key's or a team's budget and rate limits (None: no limit)."""

    kind: Literal["key", "team"]
    id: str
    budget_usd: Decimal | None = None
    period: Period = "month"
    on_exhausted: OnExhausted = "step_down"
    rpm: int | None = None
    tpm: int | None = None

    @property
    def limited(self) -> bool:
        return self.budget_usd is not None or self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class Grant:
    """A caller: its key id (logged, in the ledger), name, team and allowances."""

    key_id: str
    name: str
    team: str | None = None
    key: Allowance | None = None
    team_allowance: Allowance | None = None
    routes: frozenset[str] | None = None  # the routes (or pinned backends) it may use
    expires_at: datetime | None = None
    virtual: bool = False  # from the database (not a bootstrap key)

    @property
    def allowances(self) -> tuple[Allowance, ...]:
        return tuple(a for a in (self.key, self.team_allowance) if a is not None and a.limited)

    @property
    def budgets(self) -> tuple[Allowance, ...]:
        return tuple(a for a in self.allowances if a.budget_usd is not None)

    @property
    def on_exhausted(self) -> OnExhausted:
        """``reject`` when the key or its team says so, else ``step_down``."""
        if any(a.on_exhausted == "reject" for a in self.budgets):
            return "reject"
        return "step_down"

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def refusal(self, route: str) -> Forbidden | None:
        """Why this key may not use ``route`` (a route's name, or a pinned backend's), or None
        when it may."""
        if self.routes is None or route in self.routes:
            return None
        allowed = ", ".join(sorted(self.routes))
        return Forbidden(
            f"this key may not use {route!r}: it may use {allowed} "
            f"(ask an admin to add the route to the key)",
            param="model",
            code="route_not_allowed",
        )


def period_start(period: Period, now: datetime) -> datetime:
    """The start (UTC) of the budget period ``now`` falls in (``total``: the epoch)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    match period:
        case "day":
            return day
        case "week":
            return day - timedelta(days=day.weekday())  # Monday
        case "month":
            return day.replace(day=1)
        case _:
            return datetime(1970, 1, 1, tzinfo=UTC)


def period_end(period: Period, now: datetime) -> datetime | None:
    """When the period ``now`` falls in resets (``total`` never does)."""
    start = period_start(period, now)
    match period:
        case "day":
            return start + timedelta(days=1)
        case "week":
            return start + timedelta(weeks=1)
        case "month":
            days = calendar.monthrange(start.year, start.month)[1]
            return start + timedelta(days=days)
        case _:
            return None


MAX_DURATION = timedelta(days=100 * 366)  # a key's lifetime: any longer is "no expiry"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` as a duration (up to 100 years); a clear error
    otherwise."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    value, unit = text[:-1], text[-1:].lower()
    magnitude = value.removeprefix("-")
    if unit in units and magnitude.isascii() and magnitude.isdigit() and int(value) <= 0:
        raise ValueError(
            f"{text!r} is already past, so the key could never be used: give a lifetime from "
            f"now (30d), or revoke the key to end it"
        )
    if unit not in units or not (value.isascii() and value.isdigit()):
        raise ValueError(f"{text!r} is not a duration: write a number and m, h, d or w (30d)")
    if int(value) * units[unit] > MAX_DURATION.total_seconds():
        raise ValueError(
            f"{text!r} is longer than 100 years: give a shorter one, or no expiry at all"
        )
    return timedelta(seconds=int(value) * units[unit])

"""What a key holder may still spend: a key's (and its team's) budget, spend in the current
period (from the ledger), what is left and when the period resets. ``GET /v1/key/info`` and
``tiergate keys show`` report it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from gateway.governance import store
from gateway.governance.grants import Allowance, Grant, period_end, period_start


def budget_status(engine: Engine, allowance: Allowance, now: datetime) -> dict[str, Any]:
    """The allowance's budget (``usd`` None: no budget), spend since its period started, what
    is left (never below 0) and when the period resets (None for ``total``)."""
    spent = store.spent(engine, allowance, period_start(allowance.period, now))
    budget = allowance.budget_usd
    end = period_end(allowance.period, now)
    return {
        "usd": None if budget is None else float(budget),
        "period": allowance.period,
        "spent_usd": float(spent),
        "left_usd": None if budget is None else float(max(budget - spent, Decimal(0))),
        "resets_at": None if end is None else end.isoformat(),
        "on_exhausted": allowance.on_exhausted,
    }


def key_info(engine: Engine | None, grant: Grant, now: datetime) -> dict[str, Any]:
    """One key's own view of itself: never another key's (the caller passes its own grant)."""
    out: dict[str, Any] = {
        "id": grant.key_id,
        "name": grant.name,
        "team": grant.team,
        "virtual": grant.virtual,
        "limits": None,
        "budget": None,
        "team_budget": None,
        "team_limits": None,
        "routes": sorted(grant.routes) if grant.routes is not None else None,
        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
    }
    if not grant.virtual or engine is None:
        return out  # a bootstrap key (TIERGATE_API_KEYS): no limits
    if grant.key is not None:
        out["limits"] = {"rpm": grant.key.rpm, "tpm": grant.key.tpm}
        out["budget"] = budget_status(engine, grant.key, now)
    if grant.team_allowance is not None:
        team = grant.team_allowance
        out["team_limits"] = {"rpm": team.rpm, "tpm": team.tpm}
        out["team_budget"] = budget_status(engine, team, now)
    return out

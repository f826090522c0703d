"""Virtual keys and teams in the ledger database. A key is shown once, when it is made; the
database keeps only its SHA-256 digest and its first characters (to recognise it in a list).

Plain functions over a SQLAlchemy ``Engine`` (the CLI and the admin API call them; the key book
reads ``load``): each is one short transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Engine, RowMapping, func, insert, or_, select, update

from gateway.governance.grants import (
    ON_EXHAUSTED,
    PERIODS,
    Allowance,
    Grant,
    OnExhausted,
    Period,
)
from gateway.ledger.adaptive import OVERHEAD_ARMS
from gateway.ledger.models import KeyRow, RequestRow, TeamRow

KEY_PREFIX = "tg-"
HINT_LENGTH = 7


class GovernanceError(ValueError):
    """A key or team request that cannot be done; the message says why and what to do."""


# What the columns hold: rpm and tpm are 32-bit integers, budgets NUMERIC(20, 12) (8 digits
# before the point).
MAX_RATE = 2**31 - 1
MAX_BUDGET_USD = Decimal(10) ** 8


@dataclass(frozen=True, slots=True)
class LimitsIn:
    """Budget and rate limits as given (None: not given / no limit)."""

    budget_usd: Decimal | None = None
    period: Period | None = None
    on_exhausted: OnExhausted | None = None
    rpm: int | None = None
    tpm: int | None = None

    def check(self) -> None:
        if self.budget_usd is not None and self.budget_usd < 0:
            raise GovernanceError("budget_usd must be 0 or more")
        if self.period is not None and self.period not in PERIODS:
            raise GovernanceError(f"budget period must be one of {', '.join(PERIODS)}")
        if self.on_exhausted is not None and self.on_exhausted not in ON_EXHAUSTED:
            raise GovernanceError(f"on_exhausted must be one of {', '.join(ON_EXHAUSTED)}")
        if self.budget_usd is not None and self.budget_usd >= MAX_BUDGET_USD:
            raise GovernanceError(f"budget_usd must be below {MAX_BUDGET_USD} (USD)")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise GovernanceError(f"{name} must be 1 or more (leave it out for no limit)")
            if value is not None and value > MAX_RATE:
                raise GovernanceError(
                    f"{name} must be at most {MAX_RATE} (leave it out for no limit)"
                )

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {"budget_usd": self.budget_usd, "rpm": self.rpm, "tpm": self.tpm}
        out["budget_period"] = self.period or "month"
        out["on_exhausted"] = self.on_exhausted or "step_down"
        return out


@dataclass(frozen=True, slots=True)
class Created:
    id: str
    key: str  # shown once
    row: Mapping[str, Any]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


def put_team(engine: Engine, team: str, limits: LimitsIn) -> dict[str, Any]:
    """Create a team, or set its limits (every limit given replaces the old one)."""
    limits.check()
    if not team or len(team) > 64:
        raise GovernanceError("a team name is 1 to 64 characters")
    now = _now()
    with engine.begin() as conn:
        existing = conn.execute(select(TeamRow).where(TeamRow.id == team)).first()
        values = limits.values()
        if existing is None:
            conn.execute(insert(TeamRow).values(id=team, created_at=now, updated_at=now, **values))
        else:
            conn.execute(update(TeamRow).where(TeamRow.id == team).values(updated_at=now, **values))
            # The keys of the team are re-read by every replica: touch them.
            conn.execute(update(KeyRow).where(KeyRow.team == team).values(updated_at=now))
    return team_view(engine, team)


def team_view(engine: Engine, team: str) -> dict[str, Any]:
    if "\x00" in team:
        raise GovernanceError(f"no team {team!r}: no team name holds a NUL character")
    with engine.connect() as conn:
        row = conn.execute(select(TeamRow.__table__).where(TeamRow.id == team)).mappings().first()
        if row is None:
            raise GovernanceError(f"no team {team!r}: create it with `tiergate keys team {team}`")
        keys = conn.execute(select(func.count()).where(KeyRow.team == team)).scalar_one()
    return {**_public(row), "keys": keys}


def list_teams(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(TeamRow.__table__).order_by(TeamRow.id)).mappings().all()
    return [_public(r) for r in rows]


def create_key(
    engine: Engine,
    name: str,
    limits: LimitsIn,
    *,
    team: str | None = None,
    routes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> Created:
    """A new key (returned once, never stored) for ``name``; its team must exist."""
    limits.check()
    if not name or len(name) > 128:
        raise GovernanceError("a key's name is 1 to 128 characters")
    key, now = new_key(), _now()
    key_id = "vk-" + secrets.token_hex(6)
    with engine.begin() as conn:
        if (
            team is not None
            and conn.execute(select(TeamRow.id).where(TeamRow.id == team)).first() is None
        ):
            raise GovernanceError(
                f"no team {team!r}: create it first with `tiergate keys team {team}` "
                f"(or POST /admin/teams)"
            )
        conn.execute(
            insert(KeyRow).values(
                id=key_id,
                name=name,
                team=team,
                digest=digest(key),
                hint=key[:HINT_LENGTH],
                routes=",".join(routes) if routes else None,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
                **limits.values(),
            )
        )
    return Created(key_id, key, key_view(engine, key_id))


def _no_key(key_id: str) -> GovernanceError:
    return GovernanceError(f"no key {key_id!r}: `tiergate keys list` shows the ids")


def key_view(engine: Engine, key_id: str) -> dict[str, Any]:
    if "\x00" in key_id:
        raise _no_key(key_id)  # no id holds one (and PostgreSQL's text cannot)
    with engine.connect() as conn:
        row = conn.execute(select(KeyRow.__table__).where(KeyRow.id == key_id)).mappings().first()
    if row is None:
        raise GovernanceError(f"no key {key_id!r}: `tiergate keys list` shows the ids")
    return _public(row)


def list_keys(engine: Engine, team: str | None = None) -> list[dict[str, Any]]:
    query = select(KeyRow.__table__).order_by(KeyRow.created_at)
    if team is not None and "\x00" in team:
        return []  # no team name holds one
    if team is not None:
        query = query.where(KeyRow.team == team)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [_public(r) for r in rows]


def update_key(engine: Engine, key_id: str, **values: Any) -> dict[str, Any]:
    key_view(engine, key_id)
    with engine.begin() as conn:
        conn.execute(update(KeyRow).where(KeyRow.id == key_id).values(updated_at=_now(), **values))
    return key_view(engine, key_id)


def rotate_key(engine: Engine, key_id: str) -> Created:
    """A new secret for the same key id (same limits, spend and history); the old one stops
    working on every replica within the refresh interval."""
    view = key_view(engine, key_id)
    if view["revoked_at"] is not None:
        raise GovernanceError(f"key {key_id!r} is revoked: create a new one instead")
    key = new_key()
    update_key(engine, key_id, digest=digest(key), hint=key[:HINT_LENGTH])
    return Created(key_id, key, key_view(engine, key_id))


def revoke_key(engine: Engine, key_id: str) -> dict[str, Any]:
    return update_key(engine, key_id, revoked_at=_now())


def load(engine: Engine) -> dict[str, Grant]:
    """Every live key's grant by digest (hex): what the key book serves from."""
    with engine.connect() as conn:
        teams = {r["id"]: r for r in conn.execute(select(TeamRow.__table__)).mappings().all()}
        keys = (
            conn.execute(select(KeyRow.__table__).where(KeyRow.revoked_at.is_(None)))
            .mappings()
            .all()
        )
    out: dict[str, Grant] = {}
    for row in keys:
        team = teams.get(row["team"]) if row["team"] else None
        out[row["digest"]] = Grant(
            key_id=row["id"],
            name=row["name"],
            team=row["team"],
            key=_allowance("key", row),
            team_allowance=_allowance("team", team) if team is not None else None,
            routes=frozenset(row["routes"].split(",")) if row["routes"] else None,
            expires_at=_utc(row["expires_at"]),
            virtual=True,
        )
    return out


def spent(engine: Engine, allowance: Allowance, since: datetime) -> Decimal:
    """What a key or team has spent since ``since``, from the ledger: its own requests only.
    Routing's background calls (shadow, judge, labelling: ``OVERHEAD_ARMS``) carry the caller's
    key and team for the report, but no budget pays for them (the live counters never charge
    them; the policy's own shadow and judge limits cap them), so reading a period afresh gives
    the same figure the counters kept."""
    column = RequestRow.key_id if allowance.kind == "key" else RequestRow.team
    own = or_(RequestRow.canary_arm.is_(None), RequestRow.canary_arm.not_in(OVERHEAD_ARMS))
    query = select(func.coalesce(func.sum(RequestRow.cost_usd), 0)).where(
        column == allowance.id, RequestRow.ts >= since, own
    )
    with engine.connect() as conn:
        return Decimal(str(conn.execute(query).scalar_one()))


def _allowance(kind: str, row: RowMapping) -> Allowance:
    budget = row["budget_usd"]
    return Allowance(
        kind=cast(Any, kind),
        id=row["id"],
        budget_usd=None if budget is None else Decimal(str(budget)),
        period=row["budget_period"],
        on_exhausted=row["on_exhausted"],
        rpm=row["rpm"],
        tpm=row["tpm"],
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _public(row: RowMapping) -> dict[str, Any]:
    """A row as JSON-safe values, without the digest."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        name = str(column)
        if name == "digest":
            continue
        if isinstance(value, datetime):
            out[name] = _utc(value).isoformat()  # type: ignore[union-attr]
        elif isinstance(value, Decimal):
            out[name] = float(value)
        elif name == "routes":
            out[name] = value.split(",") if value else None
        else:
            out[name] = value
    return out


def grant_of(engine: Engine, key_id: str) -> Grant:
    """The grant of one key, revoked or not (what ``tiergate keys show`` reports on)."""
    if "\x00" in key_id:
        raise _no_key(key_id)
    with engine.connect() as conn:
        row = conn.execute(select(KeyRow.__table__).where(KeyRow.id == key_id)).mappings().first()
        if row is None:
            raise GovernanceError(f"no key {key_id!r}: `tiergate keys list` shows the ids")
        team = None
        if row["team"]:
            query = select(TeamRow.__table__).where(TeamRow.id == row["team"])
            team = conn.execute(query).mappings().first()
    return Grant(
        key_id=row["id"],
        name=row["name"],
        team=row["team"],
        key=_allowance("key", row),
        team_allowance=_allowance("team", team) if team is not None else None,
        routes=frozenset(row["routes"].split(",")) if row["routes"] else None,
        expires_at=_utc(row["expires_at"]),
        virtual=True,
    )


def team_limits(engine: Engine, team: str, changes: Mapping[str, Any]) -> LimitsIn:
    """A team's limits with ``changes`` applied (``budget_usd``, ``period``, ``on_exhausted``,
    ``rpm``, ``tpm``; None clears a limit): what is not named keeps its value."""
    with engine.connect() as conn:
        row = conn.execute(select(TeamRow.__table__).where(TeamRow.id == team)).mappings().first()
    old: dict[str, Any] = {}
    if row is not None:
        old = {
            "budget_usd": row["budget_usd"],
            "period": row["budget_period"],
            "on_exhausted": row["on_exhausted"],
            "rpm": row["rpm"],
            "tpm": row["tpm"],
        }
    merged = {**old, **changes}
    if merged.get("budget_usd") is not None:
        merged["budget_usd"] = Decimal(str(merged["budget_usd"]))
    return LimitsIn(**merged)

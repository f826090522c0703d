"""Virtual keys and teams over HTTP: ``/admin/keys`` and ``/admin/teams`` (admin key), the
same operations as ``tiergate keys``; and ``GET /v1/key/info``, a key holder's view of its own
key (spend, budget left, limits), never another key's.

Keys live in the ledger database: without the ledger (TIERGATE_LEDGER=false) these routes
answer 503. After a change this replica re-reads its key book at once; the others within
TIERGATE_KEYS_REFRESH_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.responses import Response

from gateway.errors import BadRequest, NotFound, ServiceUnavailable
from gateway.governance import store
from gateway.governance.book import KeyBook
from gateway.governance.grants import Grant, OnExhausted, Period, parse_duration
from gateway.governance.status import key_info
from gateway.governance.store import GovernanceError, LimitsIn
from gateway.http.ledger_calls import ledger_call, ledger_deadline
from gateway.ledger.writer import LedgerWriter

router = APIRouter()
T = TypeVar("T")

# The fields a GovernanceError's message may start with, and the request field it is about.
_PARAMS = (
    ("budget_usd", "budget_usd"),
    ("budget period", "budget_period"),
    ("on_exhausted", "on_exhausted"),
    ("rpm", "rpm"),
    ("tpm", "tpm"),
    ("a team name", "name"),
    ("a key's name", "name"),
    ("no team", "team"),
)


def _storable_text(value: str | None) -> str | None:
    """PostgreSQL's text cannot hold NUL: refused as the client's mistake, not sent to the
    database (whose refusal read as the database being away)."""
    if value is not None and "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which cannot be stored; remove it")
    return value


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: Decimal | None = Field(default=None, description="budget in USD per period")
    budget_period: Period | None = Field(default=None, description="day, week, month or total")
    on_exhausted: OnExhausted | None = Field(default=None, description="step_down or reject")
    rpm: int | None = Field(default=None, description="requests per minute")
    tpm: int | None = Field(default=None, description="tokens per minute")


class KeyIn(_Limits):
    """``POST /admin/keys``: what ``tiergate keys create`` takes."""

    name: str
    team: str | None = None
    routes: list[str] | None = Field(default=None, description="routes (or backends) it may use")
    expires: str | None = Field(default=None, description="lifetime from now: 30d, 12h, 90m, 2w")
    expires_at: datetime | None = None

    _storable = field_validator("name", "team")(_storable_text)


class KeyPatch(_Limits):
    """``PATCH /admin/keys/{id}``: the fields given change (null removes a limit)."""

    routes: list[str] | None = None
    expires: str | None = None
    expires_at: datetime | None = None


class TeamIn(_Limits):
    """``POST /admin/teams`` (with ``name``) or ``PUT /admin/teams/{name}``: the fields given
    are set (null removes a limit), the others keep their value."""

    name: str | None = None

    _storable = field_validator("name")(_storable_text)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _engine(request: Request) -> Engine:
    ledger: LedgerWriter | None = request.app.state.ledger
    if ledger is None:
        raise ServiceUnavailable(
            "virtual keys and teams are kept in the ledger database, and the ledger is off "
            "(TIERGATE_LEDGER=false): turn it on to manage keys",
            code="ledger_off",
        )
    return ledger.engine


def _error(exc: GovernanceError) -> BadRequest | NotFound:
    message = str(exc)
    if message.startswith("no key "):
        return NotFound(message, param="id", code="key_not_found")
    param = next((p for prefix, p in _PARAMS if message.startswith(prefix)), None)
    return BadRequest(message, param=param)


async def _call(request: Request, engine: Engine, fn: Callable[[], T], *, changed: bool) -> T:
    """``fn()`` on a worker thread; a governance error is a 400 (404 for an unknown key), a
    database error a 503. After a change, this replica's key book is re-read at once."""
    try:
        result = await asyncio.to_thread(fn)
    except GovernanceError as exc:
        raise _error(exc) from None
    except DataError:
        # The database is there and refused a value: the request's, not an outage.
        raise BadRequest(
            "the ledger database cannot store a value of this request (a NUL character, or a "
            "number out of range): check the ids and the values sent",
            code="invalid_value",
        ) from None
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"the ledger database could not be used ({type(exc).__name__}); nothing was "
            f"changed: try again shortly",
            code="ledger_unavailable",
            retry_after=5,
        ) from None
    if changed:
        book: KeyBook = request.app.state.keys
        await book.refresh(engine)
    return result


def _expiry(expires: str | None, expires_at: datetime | None) -> datetime | None:
    if expires is not None and expires_at is not None:
        raise BadRequest("give expires (30d) or expires_at (a time), not both", param="expires")
    if expires is not None:
        try:
            return datetime.now(UTC) + parse_duration(expires)
        except ValueError as exc:
            raise BadRequest(f"expires: {exc}", param="expires") from None
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at <= datetime.now(UTC):
        raise BadRequest(
            f"expires_at: {expires_at.isoformat()} is already past, so the key could never be "
            f"used: give a later time or a lifetime (expires: 30d), or revoke the key to end it "
            f"now (POST /admin/keys/{{id}}/revoke)",
            param="expires_at",
        )
    return expires_at


def _routes(request: Request, routes: list[str] | None) -> list[str] | None:
    """The route (or backend) names given, each one the serving policy knows: a key limited
    to a misspelt route could call nothing."""
    if routes is None:
        return None
    cleaned = [r.strip() for r in routes if r.strip()]
    if not cleaned or any("," in r for r in cleaned):
        raise BadRequest(
            "routes: a list of route (or backend) names, at least one; null for any",
            param="routes",
        )
    valid: list[str] = request.app.state.runtime.active.policy.valid_models()
    unknown = [r for r in cleaned if r not in valid]
    if unknown:
        names = ", ".join(repr(r) for r in unknown)
        raise BadRequest(
            f"routes: unknown route {names}: use routes or backends of the policy "
            f"(valid: {', '.join(valid)})",
            param="routes",
        )
    return cleaned


def _created(created: store.Created) -> dict[str, Any]:
    return {"id": created.id, "key": created.key, **created.row}


@router.post("/admin/keys", status_code=201)
async def create_key(request: Request, body: KeyIn) -> Response:
    """A new virtual key; the key is in this answer and nowhere else, ever."""
    engine = _engine(request)
    limits = LimitsIn(body.budget_usd, body.budget_period, body.on_exhausted, body.rpm, body.tpm)
    fn = partial(
        store.create_key,
        engine,
        body.name,
        limits,
        team=body.team,
        routes=_routes(request, body.routes),
        expires_at=_expiry(body.expires, body.expires_at),
    )
    created = await _call(request, engine, fn, changed=True)
    return _json(_created(created), 201)


@router.get("/admin/keys")
async def list_keys(request: Request, team: str | None = None) -> Response:
    engine = _engine(request)
    rows = await _call(request, engine, partial(store.list_keys, engine, team), changed=False)
    return _json({"object": "list", "data": rows})


@router.get("/admin/keys/{key_id}")
async def show_key(request: Request, key_id: str) -> Response:
    engine = _engine(request)

    def show() -> dict[str, Any]:
        row = store.key_view(engine, key_id)
        info = key_info(engine, store.grant_of(engine, key_id), datetime.now(UTC))
        return {**row, "budget": info["budget"], "team_budget": info["team_budget"]}

    return _json(await _call(request, engine, show, changed=False))


@router.patch("/admin/keys/{key_id}")
async def update_key(request: Request, key_id: str, body: KeyPatch) -> Response:
    """Change the fields given; ``null`` removes a limit (or the expiry, or the route list)."""
    engine = _engine(request)
    given = body.model_fields_set
    if not given:
        raise BadRequest("nothing to change: give at least one field")
    limits = LimitsIn(body.budget_usd, body.budget_period, body.on_exhausted, body.rpm, body.tpm)
    try:
        limits.check()
    except GovernanceError as exc:
        raise _error(exc) from None
    values: dict[str, Any] = {}
    for name in ("budget_usd", "rpm", "tpm"):
        if name in given:
            values[name] = getattr(body, name)
    for name in ("budget_period", "on_exhausted"):
        if name in given:
            value = getattr(body, name)
            if value is None:
                raise BadRequest(f"{name} cannot be null", param=name)
            values[name] = value
    if "routes" in given:
        routes = _routes(request, body.routes)
        values["routes"] = ",".join(routes) if routes else None
    if given & {"expires", "expires_at"}:
        values["expires_at"] = _expiry(body.expires, body.expires_at)
    row = await _call(
        request, engine, partial(store.update_key, engine, key_id, **values), changed=True
    )
    return _json(row)


@router.post("/admin/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: str) -> Response:
    """A new secret for the same id; the old one is refused on this replica at once."""
    engine = _engine(request)
    created = await _call(request, engine, partial(store.rotate_key, engine, key_id), changed=True)
    return _json(_created(created))


@router.post("/admin/keys/{key_id}/revoke")
@router.delete("/admin/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    engine = _engine(request)
    row = await _call(request, engine, partial(store.revoke_key, engine, key_id), changed=True)
    return _json(row)


async def _put_team(request: Request, name: str | None, body: TeamIn) -> Response:
    engine = _engine(request)
    if not name:
        raise BadRequest("name: the team's name is required", param="name")
    names = {"budget_period": "period"}
    changes = {
        names.get(field, field): getattr(body, field)
        for field in body.model_fields_set
        if field != "name"
    }
    for field in ("period", "on_exhausted"):
        if field in changes and changes[field] is None:
            raise BadRequest(f"{field} cannot be null", param=field)

    def put() -> dict[str, Any]:
        return store.put_team(engine, name, store.team_limits(engine, name, changes))

    return _json(await _call(request, engine, put, changed=True))


@router.post("/admin/teams")
async def create_team(request: Request, body: TeamIn) -> Response:
    """Create a team or change it: the fields given are set, the others kept."""
    return await _put_team(request, body.name, body)


@router.put("/admin/teams/{name}")
async def put_team(request: Request, name: str, body: TeamIn) -> Response:
    if body.name is not None and body.name != name:
        raise BadRequest("name: the body names another team than the path", param="name")
    return await _put_team(request, name, body)


@router.get("/admin/teams")
async def list_teams(request: Request) -> Response:
    engine = _engine(request)
    rows = await _call(request, engine, partial(store.list_teams, engine), changed=False)
    return _json({"object": "list", "data": rows})


@router.get("/admin/teams/{name}")
async def show_team(request: Request, name: str) -> Response:
    engine = _engine(request)
    try:
        row = await _call(request, engine, partial(store.team_view, engine, name), changed=False)
    except BadRequest as exc:
        raise NotFound(exc.message, param="name", code="team_not_found") from None
    return _json(row)


@router.get("/v1/key/info")
async def own_key_info(request: Request) -> Response:
    """The calling key's own id, limits, budget, spend in the current period and what is left
    (and its team's); nothing about any other key."""
    state = request.scope.get("state", {})
    grant: Grant | None = state.get("grant")
    if grant is None:
        if state.get("key_id") == "admin":
            raise BadRequest(
                "the admin key is not a client key and has no budget: call with a client key, "
                "or see any key with GET /admin/keys/{id}",
                code="not_a_client_key",
            )
        raise NotFound(
            "this gateway runs without API keys (loopback-only mode): there is no key to describe",
            code="no_api_key",
        )
    ledger: LedgerWriter | None = request.app.state.ledger
    if ledger is None or not grant.virtual:
        return _json(key_info(None, grant, datetime.now(UTC)))
    async with ledger_deadline():
        await ledger.flush()  # include what this process has just answered
        info = await ledger_call(partial(key_info, ledger.engine, grant, datetime.now(UTC)))
    return _json(info)

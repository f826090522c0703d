"""``tiergate keys``: virtual keys and teams in the ledger database (TIERGATE_DATABASE_URL).

A key is printed once, by ``create`` and ``rotate``; the database keeps only its digest, and no
other command prints it. Every replica re-reads the keys every TIERGATE_KEYS_REFRESH_S (2 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, cast

import typer
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli.keys_view import emit, keys_table, show_created, teams_table
from gateway.cli.policy import settings_or_exit
from gateway.governance import store
from gateway.governance.grants import parse_duration
from gateway.governance.status import key_info
from gateway.governance.store import GovernanceError, LimitsIn
from gateway.ledger.db import LedgerError, has_table, make_engine
from gateway.policy import PolicyError, load_policy

keys_app = typer.Typer(
    help="Virtual keys and teams (kept in the ledger database).", no_args_is_help=True
)

CLEARABLE = ("budget", "rpm", "tpm", "routes", "expires")
KeyId = Annotated[str, typer.Argument(help="The key's id (vk-…).")]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BudgetOpt = Annotated[
    str | None, typer.Option("--budget-usd", help="Budget in USD per period.", show_default=False)
]
PeriodOpt = Annotated[
    str | None, typer.Option("--budget-period", help="day, week, month (default) or total.")
]
RpmOpt = Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute.")]
ExhaustedOpt = Annotated[
    str | None,
    typer.Option("--on-exhausted", help="When the budget is spent: step_down (default) or reject."),
]
RoutesOpt = Annotated[
    str | None, typer.Option("--routes", help="Routes (or backends) it may use: a,b.")
]
ExpiresOpt = Annotated[
    str | None, typer.Option("--expires", help="Lifetime from now: 30d, 12h, 90m, 2w.")
]


class _Failed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@contextlib.contextmanager
def _engine() -> Iterator[Engine]:
    """The ledger database's engine, its governance tables checked; every failure a one-line
    error (exit 2: a request that cannot be done, 1: the database)."""
    settings = settings_or_exit()
    try:
        engine = make_engine(settings.ledger_url())
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    try:
        try:
            if not has_table(engine, "gov_keys"):
                raise _Failed(
                    "the ledger database has no key tables yet: run `tiergate db upgrade` "
                    "(with the same TIERGATE_DATABASE_URL) first",
                    1,
                )
            yield engine
        except GovernanceError as exc:
            raise _Failed(str(exc), 2) from None
        except SQLAlchemyError as exc:
            first = str(exc).splitlines()[0][:300]
            raise _Failed(f"cannot use the ledger database: {first}", 1) from None
    except _Failed as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=exc.code) from None
    finally:
        engine.dispose()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _money(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _fail(f"--budget-usd: {text!r} is not an amount in USD (like 25 or 0.50)") from None
    if not value.is_finite():
        raise _fail(f"--budget-usd: {text!r} is not an amount in USD (like 25 or 0.50)")
    return value


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.now(UTC) + parse_duration(text)
    except ValueError as exc:
        raise _fail(f"--expires: {exc}") from None


def _routes(text: str | None) -> list[str] | None:
    """The route (or backend) names of ``--routes``, each one the policy knows: a key limited
    to a misspelt route could call nothing (exit 2 naming the valid ones)."""
    if text is None:
        return None
    routes = [r.strip() for r in text.split(",") if r.strip()]
    if not routes:
        raise _fail("--routes: name at least one route (a,b), or `--clear routes` for any")
    path = settings_or_exit().policy
    try:
        policy = load_policy(path)
    except PolicyError:
        raise _fail(
            f"--routes: cannot check the names against the policy {path}, which has problems: "
            f"run `tiergate policy check {path}` (or set TIERGATE_POLICY to the gateway's policy)"
        ) from None
    valid = policy.valid_models()
    unknown = [r for r in routes if r not in valid]
    if unknown:
        names = ", ".join(repr(r) for r in unknown)
        raise _fail(
            f"--routes: unknown route {names} in the policy {path}: use routes or backends "
            f"(valid: {', '.join(valid)})"
        )
    return routes


def _limits(
    budget: str | None,
    period: str | None,
    on_exhausted: str | None,
    rpm: int | None,
    tpm: int | None,
) -> LimitsIn:
    limits = LimitsIn(
        budget_usd=_money(budget),
        period=cast(Any, period),
        on_exhausted=cast(Any, on_exhausted),
        rpm=rpm,
        tpm=tpm,
    )
    try:
        limits.check()
    except GovernanceError as exc:
        raise _fail(str(exc)) from None
    return limits


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    team: Annotated[str | None, typer.Option("--team", help="Its team (must exist).")] = None,
    budget_usd: BudgetOpt = None,
    budget_period: PeriodOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    routes: RoutesOpt = None,
    expires: ExpiresOpt = None,
    on_exhausted: ExhaustedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a virtual key and print it, once."""
    limits = _limits(budget_usd, budget_period, on_exhausted, rpm, tpm)
    expires_at, route_list = _expiry(expires), _routes(routes)
    with _engine() as engine:
        created = store.create_key(
            engine, name, limits, team=team, routes=route_list, expires_at=expires_at
        )
    show_created(created, as_json, "Created")


@keys_app.command("list")
def list_cmd(
    team: Annotated[str | None, typer.Option("--team", help="Only this team's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The keys (never the keys themselves: their id, first characters and limits)."""
    with _engine() as engine:
        rows = store.list_keys(engine, team)
    title = "tiergate keys" + (f" of team {escape(team)}" if team else "")
    emit(rows, as_json, keys_table(rows, title))


@keys_app.command("show")
def show(key_id: KeyId, as_json: JsonOpt = False) -> None:
    """One key: its limits, and its (and its team's) spend in the current period."""
    with _engine() as engine:
        row = store.key_view(engine, key_id)
        info = key_info(engine, store.grant_of(engine, key_id), datetime.now(UTC))
    out = {**row, "budget": info["budget"], "team_budget": info["team_budget"]}
    lines = []
    for label, budget in (("key", info["budget"]), ("team", info["team_budget"])):
        if budget is None:
            continue
        limit = "no budget" if budget["usd"] is None else f"budget ${budget['usd']:,.2f}"
        left = "" if budget["left_usd"] is None else f", ${budget['left_usd']:,.6f} left"
        resets = f", resets {budget['resets_at'][:19]}" if budget["resets_at"] else ""
        lines.append(
            f"{label}: {limit} per {budget['period']}, spent ${budget['spent_usd']:,.6f}"
            f"{left}{resets}; when spent: {budget['on_exhausted']}"
        )
    emit(out, as_json, keys_table([row], f"key {escape(key_id)}"), *lines)


@keys_app.command("rotate")
def rotate(key_id: KeyId, as_json: JsonOpt = False) -> None:
    """A new secret for the same key id (limits and spend kept); the old one stops working."""
    with _engine() as engine:
        created = store.rotate_key(engine, key_id)
    show_created(created, as_json, "Rotated")


@keys_app.command("revoke")
def revoke(key_id: KeyId, as_json: JsonOpt = False) -> None:
    """Revoke a key for good (its history stays in the ledger)."""
    with _engine() as engine:
        row = store.revoke_key(engine, key_id)
    revoked = f"Revoked key [bold]{escape(key_id)}[/bold] ({escape(row['name'])})."
    emit(row, as_json, revoked, changed=True)


@keys_app.command("update")
def update(
    key_id: KeyId,
    budget_usd: BudgetOpt = None,
    budget_period: PeriodOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    routes: RoutesOpt = None,
    expires: ExpiresOpt = None,
    on_exhausted: ExhaustedOpt = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", help=f"Remove a limit: {', '.join(CLEARABLE)} (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a key's limits; what is not given is kept."""
    _limits(budget_usd, budget_period, on_exhausted, rpm, tpm)  # checked
    values: dict[str, Any] = {}
    if budget_usd is not None:
        values["budget_usd"] = _money(budget_usd)
    for column, value in (
        ("budget_period", budget_period),
        ("on_exhausted", on_exhausted),
        ("rpm", rpm),
        ("tpm", tpm),
    ):
        if value is not None:
            values[column] = value
    if routes is not None:
        values["routes"] = ",".join(_routes(routes) or [])
    if expires is not None:
        values["expires_at"] = _expiry(expires)
    for name in clear or []:
        if name not in CLEARABLE:
            raise _fail(f"--clear: use one of {', '.join(CLEARABLE)}")
        column = {"budget": "budget_usd", "expires": "expires_at"}.get(name, name)
        if column in values:
            raise _fail(f"--clear {name} and a new value for it: give one or the other")
        values[column] = None
    if not values:
        raise _fail("nothing to change: give a limit (see --help) or --clear")
    with _engine() as engine:
        row = store.update_key(engine, key_id, **values)
    emit(row, as_json, keys_table([row], f"key {escape(key_id)}, updated"), changed=True)


@keys_app.command("team")
def team(
    name: Annotated[str, typer.Argument(help="The team's name.")],
    budget_usd: BudgetOpt = None,
    budget_period: PeriodOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    on_exhausted: ExhaustedOpt = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", help="Remove a limit: budget, rpm, tpm (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a team, or change its budget and limits (what is not given is kept)."""
    _limits(budget_usd, budget_period, on_exhausted, rpm, tpm)  # checked
    changes: dict[str, Any] = {}
    for field, value in (
        ("budget_usd", _money(budget_usd)),
        ("period", budget_period),
        ("on_exhausted", on_exhausted),
        ("rpm", rpm),
        ("tpm", tpm),
    ):
        if value is not None:
            changes[field] = value
    for limit in clear or []:
        field = {"budget": "budget_usd"}.get(limit, limit)
        if field not in ("budget_usd", "rpm", "tpm"):
            raise _fail("--clear: use one of budget, rpm, tpm")
        changes[field] = None
    with _engine() as engine:
        view = store.put_team(engine, name, store.team_limits(engine, name, changes))
    emit(view, as_json, teams_table([view], f"team {escape(name)}"), changed=True)


@keys_app.command("teams")
def teams(as_json: JsonOpt = False) -> None:
    """The teams and their budgets and limits."""
    with _engine() as engine:
        rows = store.list_teams(engine)
    emit(rows, as_json, teams_table(rows, "tiergate teams"))

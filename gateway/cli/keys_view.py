"""How ``tiergate keys`` shows keys and teams: rich tables (names never read as markup), JSON,
and the note that running gateways honour a change within the refresh interval."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from gateway.governance import store

NUMBERS = ("budget $", "rpm", "tpm")


def note(out: Console) -> None:
    out.print(
        "Running gateways honour this within TIERGATE_KEYS_REFRESH_S (2 s by default).",
        style="dim",
    )


def _status(row: dict[str, Any], now: datetime) -> str:
    if row.get("revoked_at"):
        return "revoked"
    expires = row.get("expires_at")
    if expires and datetime.fromisoformat(expires) <= now:
        return "expired"
    return "active"


def console() -> Console:
    return Console() if Console().is_terminal else Console(width=200)


def _cell(value: Any) -> str:
    """A value as a table shows it (names are the user's: never read as rich markup)."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return escape(",".join(str(v) for v in value))
    return escape(str(value))


def keys_table(rows: list[dict[str, Any]], title: str) -> Table:
    now = datetime.now(UTC)
    table = Table(title=title)
    for header in ("id", "name", "team", "starts", "budget $", "period", "rpm", "tpm"):
        table.add_column(header, justify="right" if header in NUMBERS else "left")
    for header in ("routes", "expires", "status"):
        table.add_column(header)
    for row in rows:
        table.add_row(
            _cell(row["id"]),
            _cell(row["name"]),
            _cell(row["team"]),
            f"{row['hint']}…",
            _cell(row["budget_usd"]),
            row["budget_period"],
            _cell(row["rpm"]),
            _cell(row["tpm"]),
            _cell(row["routes"]),
            _cell(row["expires_at"] and row["expires_at"][:19]),
            _status(row, now),
        )
    return table


def show_created(created: store.Created, as_json: bool, what: str) -> None:
    if as_json:
        typer.echo(json.dumps({"key": created.key, "id": created.id, **created.row}, indent=2))
        return
    out = console()
    out.print(f"{what} key [bold]{created.id}[/bold] ({escape(created.row['name'])}):")
    typer.echo(created.key)
    out.print(
        "This is the only time the key is shown: store it now (the database keeps only its "
        "digest).",
        style="yellow",
    )
    note(out)


def teams_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("team")
    for header in ("budget $", "period", "rpm", "tpm", "when spent"):
        table.add_column(header, justify="right" if header in NUMBERS else "left")
    for row in rows:
        table.add_row(
            _cell(row["id"]),
            _cell(row["budget_usd"]),
            row["budget_period"],
            _cell(row["rpm"]),
            _cell(row["tpm"]),
            row["on_exhausted"],
        )
    return table


def emit(payload: Any, as_json: bool, *shown: RenderableType, changed: bool = False) -> None:
    """``payload`` as JSON, or ``shown`` for a person (and, after a ``changed`` key or team,
    when running gateways honour it)."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    out = console()
    for item in shown:
        out.print(item)
    if changed:
        note(out)

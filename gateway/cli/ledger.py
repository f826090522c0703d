"""``tiergate db upgrade|downgrade|current`` and ``tiergate report``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from alembic.util.exc import CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from gateway.cli.policy import settings_or_exit
from gateway.ledger.db import (
    LedgerError,
    SchemaMismatch,
    display_url,
    downgrade,
    make_engine,
    revision_chain,
    schema_state,
    upgrade,
)
from gateway.ledger.report import (
    GROUPINGS,
    baselines_line,
    build_report,
    csv_rows,
    known_teams,
    parse_since,
    rows_for_output,
)
from gateway.ledger.report_figures import CSV_FIELDS

db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the ledger schema at TIERGATE_DATABASE_URL (default: embedded SQLite)."""
    settings = settings_or_exit()
    url = settings.ledger_url()
    with _database_errors("upgrade"):
        try:
            upgrade(url)
        except SchemaMismatch as exc:  # migrated by a newer tiergate
            if not exc.state.usable:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(code=2) from None
            state = exc.state
            typer.echo(
                f"nothing to do: the database is at {state.database}, newer than this gateway "
                f"({state.code}), and compatible with it ({display_url(url)})"
            )
            return
    typer.echo(f"ledger schema is at head ({display_url(url)})")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="The revision to go back to, e.g. 0010.")],
) -> None:
    """Bring the ledger schema back to REVISION (to run an older gateway that cannot use it)."""
    settings = settings_or_exit()
    url = settings.ledger_url()
    chain = revision_chain(url)
    if revision not in chain:
        _usage_error(
            "REVISION",
            f"{revision!r} is not a revision of this tiergate: use one of {', '.join(chain)}",
        )
    with _database_errors("downgrade"):
        try:
            downgrade(url, revision)
        except SchemaMismatch as exc:  # migrated by a newer tiergate: only it can go back
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
    typer.echo(f"ledger schema is at {revision} ({display_url(url)})")


@db_app.command("current")
def db_current() -> None:
    """The ledger schema's revision against this tiergate's: at head, behind, or ahead (and
    whether this tiergate may use it). Exit code 0 when it may, 1 when not."""
    settings = settings_or_exit()
    url = settings.ledger_url()
    with _database_errors("read"):
        engine = make_engine(url)
        try:
            state = schema_state(url, engine)
        finally:
            engine.dispose()
    typer.echo(f"{state.verdict}: {state.describe()} ({display_url(url)})")
    if not state.usable:
        raise typer.Exit(code=1)


@contextmanager
def _database_errors(doing: str) -> Iterator[None]:
    """A database that cannot be reached or refuses: one line on stderr, exit code 1."""
    try:
        yield
    except LedgerError as exc:  # the message names the variable and what to do
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except CommandError as exc:  # Alembic: a revision it cannot go to from here
        typer.echo(f"error: cannot {doing} the ledger database: {_first_line(exc)}", err=True)
        raise typer.Exit(code=2) from None
    except OperationalError as exc:
        typer.echo(f"error: cannot {doing} the ledger database: {_first_line(exc)}", err=True)
        raise typer.Exit(code=1) from None
    except SQLAlchemyError as exc:  # refused by the database: privileges, a foreign schema
        hint = ""
        if isinstance(exc, ProgrammingError) and "permission denied" in str(exc):
            hint = (
                "; the user in TIERGATE_DATABASE_URL must be allowed to create tables there "
                "(own the database, or GRANT CREATE ON SCHEMA public TO that user)"
            )
        typer.echo(f"error: cannot {doing} the ledger database: {_first_line(exc)}{hint}", err=True)
        raise typer.Exit(code=1) from None


def report(
    since: Annotated[
        str, typer.Option(help="Start, included: 7d, 12h, 30m or an ISO date (UTC unless it says).")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End, not included (default: now); same forms as --since.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help=f"Group by: {', '.join(GROUPINGS)} (default: totals).")
    ] = None,
    output: Annotated[
        str, typer.Option("--format", help="table, json or csv.", case_sensitive=False)
    ] = "table",
    team: Annotated[
        str | None, typer.Option("--team", help="Only this team's requests (virtual keys).")
    ] = None,
) -> None:
    """Requests, tokens, cost, baseline cost, savings, latency and reliability from the ledger."""
    output = output.lower()  # --format CSV as well: typer's case_sensitive applies to choices only
    if output not in ("table", "json", "csv"):
        _usage_error("--format", f"{output!r}: use table, json or csv")
    if by is not None and by not in GROUPINGS:
        _usage_error("--by", f"{by!r}: use one of {', '.join(GROUPINGS)}")
    try:
        start = parse_since(since)
    except ValueError as exc:
        _usage_error("--since", str(exc))
    try:
        end = parse_since(until) if until else None
    except ValueError as exc:
        _usage_error("--until", str(exc))
    if end is not None and end <= start:
        _usage_error(
            "--until",
            f"{until!r} is not after --since {since!r}: the window [since, until) would be "
            f"empty; give the earlier time to --since",
        )
    settings = settings_or_exit()
    try:
        engine = make_engine(settings.ledger_url())
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    err = Console(stderr=True)
    try:
        if team is not None:
            _check_team(engine, team)
        with Progress(
            TextColumn("scanning the ledger"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rows"),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task("scan", total=None)
            result = build_report(
                engine,
                since=start,
                until=end,
                by=by,
                team=team,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except OperationalError as exc:
        typer.echo(f"error: cannot read the ledger: {_first_line(exc)}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
    if output == "json":
        typer.echo(json.dumps(result, indent=2))
    elif output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_rows(result))
    else:
        console = Console() if Console().is_terminal else Console(width=240)
        console.print(_table(result))
        totals = result["totals"]
        console.print(f"Money in {result['currency']}.", end=" ")
        if result["baseline_basis"]:
            console.print(f"Baseline: {result['baseline_basis']}.")
            console.print(f"Baseline model: {baselines_line(result['baselines'])}.")
        else:
            console.print(
                "No baseline: no request in the window has a baseline cost (no priced request, "
                "or a policy without pricing.baseline)."
            )
        if totals["unpriced_requests"]:
            console.print(
                f"{totals['unpriced_requests']} requests went to backends without a price and "
                f"are left out of the money columns: give them one under pricing.backends"
            )
        if totals["estimated_usage_requests"]:
            console.print(
                f"{totals['estimated_usage_requests']} requests have estimated token counts (a "
                f"stream cut short, or no usage reported): their cost and baseline are estimates"
            )


def _usage_error(option: str, message: str) -> NoReturn:
    """A mistake in the arguments: one line on stderr naming the option, exit code 2."""
    typer.echo(f"error: {option}: {message}", err=True)
    raise typer.Exit(code=2)


def _check_team(engine: Engine, team: str) -> None:
    """An unknown ``--team`` is a mistake (a misspelt name would print an empty report)."""
    teams = known_teams(engine)
    if team in teams:
        return
    known = f"known: {', '.join(teams)}" if teams else "no team has a key or a request yet"
    typer.echo(
        f"error: --team: no team {team!r} in the ledger ({known}); `tiergate keys teams` lists "
        f"the teams, `tiergate report --by team` their spend",
        err=True,
    )
    raise typer.Exit(code=2)


def _table(result: dict[str, Any]) -> Table:
    by = result["by"] or "all"
    title = f"tiergate report: {result['since'][:19]} to {result['until'][:19]}"
    if result.get("team"):
        title += f", team {result['team']}"
    table = Table(title=title)
    columns = (
        (by, "key", None),
        ("requests", "requests", "{:,}"),
        ("tokens", "_tokens", "{:,}"),
        ("cost $", "cost_usd", _money),
        ("overhead $", "overhead_usd", _money),
        ("baseline $", "baseline_cost_usd", _money),
        ("saved $", "savings_usd", _money),
        ("saved %", "savings_pct", "{:.1f}"),
        ("$ / 1M tok", "cost_per_1m_tokens_usd", _per_million),
        ("p50 ms", "latency_ms_p50", "{:.0f}"),
        ("p95 ms", "latency_ms_p95", "{:.0f}"),
        ("ttft p50", "ttft_ms_p50", "{:.0f}"),
        ("fallback", "fallback_rate", "{:.1%}"),
        ("errors", "error_rate", "{:.1%}"),
        ("abandoned", "abandoned_rate", "{:.1%}"),
        ("cache hit", "cache_hit_rate", "{:.1%}"),
        ("feedback", "feedback_avg", "{:.2f}"),
        ("fb n", "feedback_count", "{:,}"),
        ("judge", "judge_avg", "{:.2f}"),
        ("judge n", "judge_count", "{:,}"),
    )
    for header, *_ in columns:
        table.add_column(header, justify="left" if header == by else "right")
    for row in rows_for_output(result):
        row = {**row, "_tokens": row["prompt_tokens"] + row["completion_tokens"]}
        cells = []
        for _, key, fmt in columns:
            value = row[key]
            if value is None:
                cells.append("—")
            elif callable(fmt):
                cells.append(fmt(value))
            else:
                cells.append(fmt.format(value) if fmt else str(value))
        table.add_row(*cells)
    return table


def _money(value: float) -> str:
    """Dollars as people read them: cents for big sums, six decimals for per-request ones, and
    three significant digits below a millionth, so a cost that is not zero never reads 0.000000
    (a local tier's few fast requests, say) and a zero one is 0.000000."""
    if abs(value) >= 1:
        return f"{value:,.2f}"
    if value != 0 and abs(value) < 0.0000005:
        return f"{value:.2e}"
    return f"{value:.6f}"


def _per_million(value: float) -> str:
    """Cost per 1M tokens as the report gives it (4 decimals, or 4 significant digits below
    that: a tiny model's 0.001649 is not 0.002, and 0.00003 is not 0.000)."""
    return f"{value:,.4f}" if abs(value) >= 0.1 or value == 0 else f"{value:.4g}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300]

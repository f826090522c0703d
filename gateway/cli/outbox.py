"""``tiergate outbox list|export|retry|drop``: the rows the ledger database refused.

They wait in the outbox's ``rejected`` table (``gateway.ledger.outbox``), count toward its bound
(``TIERGATE_OUTBOX_MAX_BYTES``) and are never replayed by themselves. These commands open the
outbox file in place: a stopped gateway's, or a running one's (SQLite serialises the writes;
each command's changes are short transactions, and the gateway's figures follow within its
retry interval).

A full outbox is hundreds of MiB of rows, and these commands run beside the gateway, often in
its container and under its memory limit: they read the rows a page at a time
(``Outbox.iter_rejected``) and write each as it comes (``export`` to a temporary file renamed
at the end), so their memory does not grow with the outbox.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from gateway.cli.policy import settings_or_exit
from gateway.ledger.capacity import human
from gateway.ledger.db import display_url, make_engine
from gateway.ledger.outbox import Outbox, OutboxMissing, RejectedRow
from gateway.ledger.rejected import RetryInterrupted, retry

outbox_app = typer.Typer(
    help="Rows the ledger database refused, kept in the local outbox: list, export, retry, drop.",
    no_args_is_help=True,
)

OutboxPath = Annotated[
    Path | None,
    typer.Option("--outbox", help="The outbox file (default TIERGATE_OUTBOX_PATH)."),
]
LIST_LIMIT = 50  # rows `list` shows in its table unless told otherwise
LIMIT_HELP = f"{LIST_LIMIT} for the table, all with --json"
Ids = Annotated[
    list[str] | None, typer.Option("--id", help="Only this row (repeat for more); default: all.")
]


@outbox_app.command("list")
def list_rejected(
    outbox: OutboxPath = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="A JSON array instead of a table (every row unless --limit)."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=0,
            help=f"At most this many rows, oldest first; 0: all (default {LIMIT_HELP}).",
        ),
    ] = None,
) -> None:
    """The rejected rows: id, when the database refused it, its error, size in bytes."""
    with _opened(outbox) as box:
        count = box.rejected()
        rows = _first(box.iter_rejected(), LIST_LIMIT if limit is None and not as_json else limit)
        if as_json:
            _json_array(row.to_json() for row in rows)
            return
        shown = 0
        for row in rows:
            when = row.rejected_at.isoformat(timespec="seconds") if row.rejected_at else "-"
            typer.echo(f"{row.id}  {when}  {row.size:>7}  {row.error}")
            shown += 1
        total = box.rejected_bytes()
        waiting = box.size
    typer.echo(
        f"{count} rejected row(s), {human(total)}; {waiting} row(s) waiting for the database"
    )
    if shown < count:
        typer.echo(
            f"showing the oldest {shown}: --limit N for more, --limit 0 for all, or "
            "`tiergate outbox export FILE` for every row in full"
        )


@outbox_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="A new file for the rows (JSON lines).")],
    outbox: OutboxPath = None,
    ids: Ids = None,
) -> None:
    """Write the rejected rows to FILE, one JSON object a line: id, rejected_at, error, size and
    the row itself. Nothing leaves the outbox. FILE appears only once complete."""
    if file.exists():
        _fail(f"{file} exists: name a new file (export never overwrites one)", code=2)
    with _opened(outbox) as box:
        count = _export(_chosen(box, ids), file)
    typer.echo(f"exported {count} rejected row(s) to {file}")


def _export(rows: Iterable[RejectedRow], file: Path) -> int:
    """``rows`` written to a temporary file beside ``file`` as they come, then linked to
    ``file`` (never over one); how many."""
    count = 0
    try:
        handle, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=file.parent)
    except OSError as exc:
        _fail(f"cannot write {file}: {exc.strerror or exc}; name a file in a writable folder")
    partial = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({**row.to_json(), "row": json.loads(row.payload)}) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.link(partial, file)  # unlike a rename, never replaces a file made meanwhile
    except FileExistsError:
        _fail(f"{file} exists: name a new file (export never overwrites one)", code=2)
    except OSError as exc:
        _fail(f"cannot write {file}: {exc.strerror or exc}; name a file in a writable folder")
    finally:
        partial.unlink(missing_ok=True)
    return count


@outbox_app.command("retry")
def retry_rejected(outbox: OutboxPath = None, ids: Ids = None) -> None:
    """Insert the rejected rows into the ledger (TIERGATE_DATABASE_URL) again, after fixing
    why it refused them: those it takes leave the outbox, the others stay with its new error.
    Exit code 1 when some were refused again."""
    settings = settings_or_exit()
    url = settings.ledger_url()
    with _opened(outbox, settings.outbox_path) as box:
        rows = _chosen(box, ids)
        engine = make_engine(url)
        try:
            done = retry(box, engine, rows, lambda row_id, error: typer.echo(f"{row_id}  {error}"))
        except RetryInterrupted as exc:
            _fail(
                f"the ledger database ({display_url(url)}) did not take the rows: {exc}; "
                f"{exc.outcome.stored} were stored before that, the rest stay in the outbox: "
                "run this again once it answers"
            )
        finally:
            engine.dispose()
    typer.echo(f"{done.stored} row(s) stored in the ledger ({display_url(url)})")
    if done.refused:
        typer.echo(
            f"{done.refused} row(s) refused again, kept with the database's new error: "
            "fix the cause and retry, or drop them",
            err=True,
        )
        raise typer.Exit(code=1)


@outbox_app.command("drop")
def drop(
    outbox: OutboxPath = None,
    ids: Ids = None,
    every: Annotated[bool, typer.Option("--all", help="Every rejected row.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them.")] = False,
) -> None:
    """Delete rejected rows for good (--id ID, or --all): they never reach the ledger. Export
    them first."""
    if bool(ids) == every:
        _fail("--id/--all: name the rows to drop with --id ID (repeatable), or give --all", code=2)
    with _opened(outbox) as box:
        chosen = None if every else [row.id for row in _chosen(box, ids)]
        if not yes:
            count = box.rejected_size if chosen is None else len(chosen)
            _fail(
                f"--yes: this deletes {count} rejected row(s) for good (they never reach the "
                "ledger); export them first (tiergate outbox export FILE), then add --yes",
                code=2,
            )
        dropped = box.drop_rejected(chosen)
    typer.echo(f"dropped {dropped} rejected row(s)")


def _chosen(box: Outbox, ids: list[str] | None) -> Iterable[RejectedRow]:
    """The rejected rows named (all, a page at a time, without ``ids``); a name not there is
    an error."""
    if not ids:
        return box.iter_rejected()
    rows = box.rejected_rows(ids)
    missing = sorted(set(ids or ()) - {row.id for row in rows})
    if missing:
        _fail(
            f"--id: no rejected row {', '.join(missing)} in {box.path} "
            "(`tiergate outbox list` shows the ids)",
            code=2,
        )
    return rows


@contextmanager
def _opened(path: Path | None, default: Path | None = None) -> Iterator[Outbox]:
    """The outbox file at ``path`` (default TIERGATE_OUTBOX_PATH), never a new one."""
    if path is None:
        path = default if default is not None else settings_or_exit().outbox_path
    try:
        box = Outbox.existing(path)
    except OutboxMissing:
        _fail(
            f"no outbox at {path}: give the file the gateway uses with --outbox or "
            "TIERGATE_OUTBOX_PATH (by default .tiergate/outbox.db in the folder it runs in)"
        )
    except sqlite3.Error as exc:
        hint = (
            "run this as the user the gateway runs as (it must write the file and its folder)"
            if "readonly" in str(exc)
            else "is it the gateway's outbox file?"
        )
        _fail(f"{path} is not a usable outbox ({exc}): {hint}")
    try:
        yield box
    except sqlite3.OperationalError as exc:
        _fail(f"cannot change the outbox at {path}: {exc}; try again (a gateway may hold it)")
    finally:
        box.close()


def _first(rows: Iterator[RejectedRow], limit: int | None) -> Iterator[RejectedRow]:
    """The first ``limit`` of ``rows`` (all for None or 0)."""
    return rows if not limit else islice(rows, limit)


def _json_array(items: Iterable[dict[str, object]]) -> None:
    """``items`` to stdout as one JSON array, each written as it comes."""
    out = sys.stdout
    separator = "[\n  "
    for item in items:
        out.write(separator + json.dumps(item))
        separator = ",\n  "
    out.write("[]\n" if separator.startswith("[") else "\n]\n")
    out.flush()


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)

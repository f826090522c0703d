"""The ``tiergate`` command line. Each command lives in its own module; this file wires them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.bench import bench
from gateway.cli.calibrate import calibrate, replay_cmd
from gateway.cli.canary import canary_app
from gateway.cli.cascade import cascade_calibrate
from gateway.cli.help_text import TidyGroup
from gateway.cli.keys import keys_app
from gateway.cli.labels import export_labels
from gateway.cli.ledger import db_app, report
from gateway.cli.models import eval_models, fit
from gateway.cli.outbox import outbox_app
from gateway.cli.policy import policy_app, score_cmd, settings_or_exit
from gateway.cli.scorer import eval_router, train_scorer
from gateway.tools.demo import demo_command

app = typer.Typer(
    name="tiergate",
    cls=TidyGroup,  # one-line command rows, no "<bool>" beside flags
    help="A cost-and-quality routing gateway for LLM traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("bench")(bench)
app.command("score")(score_cmd)
policy_app.command("replay")(replay_cmd)
app.add_typer(policy_app, name="policy")
app.command("eval-router")(eval_router)
app.command("train-scorer")(train_scorer)
app.command("export-labels")(export_labels)
app.command("calibrate")(calibrate)
app.command("cascade-calibrate")(cascade_calibrate)
app.add_typer(db_app, name="db")
app.add_typer(outbox_app, name="outbox")
app.add_typer(canary_app, name="canary")
app.add_typer(keys_app, name="keys")
app.command("report")(report)
app.command("demo")(demo_command)
app.command("fit")(fit)
app.command("eval-models")(eval_models)


@app.callback()
def _root() -> None:
    """A cost-and-quality routing gateway for LLM traffic."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address (default TIERGATE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TIERGATE_PORT).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy (default TIERGATE_POLICY).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Gateway processes (default TIERGATE_WORKERS, 1)."),
    ] = None,
) -> None:
    """Start the gateway (uvicorn) with the policy's backends."""
    from gateway.app import create_app
    from gateway.ledger.db import LedgerError, check_ledger
    from gateway.listening import BindError
    from gateway.policy import PolicyError, load_policy
    from gateway.preflight import ExposureError, check_exposure, check_local_paths
    from gateway.server import run_single
    from gateway.workers import Supervisor

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "policy": policy, "workers": workers}.items()
        if v is not None
    }
    # Worker processes read their settings from the environment: pass the overrides on.
    for key, value in overrides.items():
        os.environ[f"TIERGATE_{key.upper()}"] = str(value)
    settings = settings_or_exit(options=overrides.keys())
    try:
        load_policy(settings.policy)  # fail here, clearly, rather than inside the server
        check_exposure(settings)  # before anything is made on disk
        if settings.ledger:
            check_local_paths(settings)
            check_ledger(settings.ledger_url())
        app = create_app(settings)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    # ValueError: a malformed TIERGATE_API_KEYS; SettingError: an unusable outbox or journal path
    except (ExposureError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    try:
        if settings.workers > 1:
            code = Supervisor(settings, settings.workers).run()
        else:
            run_single(app, settings)
            code = 0
    except BindError as exc:  # the port is taken, or not ours to take: before anything started
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=code)


@app.command()
def backends(
    policy: Annotated[Path | None, typer.Option(help="Policy (default TIERGATE_POLICY).")] = None,
) -> None:
    """Probe each backend of a policy once and print its health."""
    from adapters import load_backend
    from gateway.policy import PolicyError, load_policy
    from gateway.routing.pool import disabled_reason

    try:
        loaded = load_policy(policy or settings_or_exit().policy)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None

    async def probe() -> int:
        bad = 0
        for name, config in loaded.backends.items():
            reason = disabled_reason(config)
            if reason:
                typer.echo(f"{name:<12} {config.type:<14} -    {reason}")
                continue
            backend = load_backend(name, config)
            try:
                health = await backend.health()
            finally:
                await backend.aclose()
            bad += not health.ok
            mark = "ok  " if health.ok else "DOWN"
            typer.echo(f"{name:<12} {config.type:<14} {mark} {health.detail}")
        return bad

    if asyncio.run(probe()):
        raise typer.Exit(code=1)


def main() -> None:
    app()

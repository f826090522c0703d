"""``tiergate canary status | promote | rollback``: the canary of the policy, read from and
decided in the ledger database directly (TIERGATE_DATABASE_URL).

A decision is a ``canary_events`` row; every running gateway adopts it at its next evaluation
(``canary.evaluate_every_s``). For an immediate effect on one gateway use the admin API
(``POST /admin/canary/promote`` / ``rollback``), which the other replicas then follow the same
way.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from gateway.canary.arms import arm_figures
from gateway.canary.events import (
    RESTARTABLE,
    Action,
    CanaryEvent,
    Superseded,
    latest_event,
    recent_events,
    record_event,
    started_at,
)
from gateway.canary.guardrails import candidate_arm, evaluate
from gateway.cli.policy import settings_or_exit
from gateway.ledger.db import make_engine
from gateway.policy.canary import CanarySpec
from gateway.policy.pin import pin_problem

if TYPE_CHECKING:
    from gateway.policy import Policy

canary_app = typer.Typer(
    help="The policy's canary: its state, promote, rollback.", no_args_is_help=True
)

PolicyOption = Annotated[Path | None, typer.Option(help="Policy (default TIERGATE_POLICY).")]


def _spec(policy: Path | None) -> CanarySpec:
    return _loaded(policy)[1]


def _loaded(policy: Path | None) -> tuple[Policy, CanarySpec]:
    from gateway.policy import PolicyError, load_policy

    try:
        loaded = load_policy(policy or settings_or_exit().policy)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    if loaded.canary is None:
        typer.echo(f"error: {loaded.source} has no `canary:` block", err=True)
        raise typer.Exit(code=1)
    return loaded, loaded.canary


def _engine() -> Engine:
    return make_engine(settings_or_exit().ledger_url())


def status_report(engine: Engine, spec: CanarySpec) -> dict[str, Any]:
    """The canary's state, figures per arm and the guardrails' verdict (not acted on)."""
    latest = latest_event(engine, spec.name, spec.candidate)
    since = started_at(engine, spec.name, spec.candidate)
    result: dict[str, Any] = {
        "canary": spec.name,
        "candidate": spec.candidate,
        "tier": spec.tier,
        "mode": spec.mode,
        "percent": spec.percent,
        "candidate_arm": candidate_arm(spec),
        "status": latest.status if latest else "not started",
        "reason": latest.reason if latest else "no gateway has run this canary yet",
        "since": since.isoformat() if since else None,
        "arms": {},
        "verdict": None,
        "events": [e.as_dict() for e in recent_events(engine, spec.name, spec.candidate, 10)],
    }
    if since is not None:
        figures = arm_figures(engine, since=since, candidate=spec.candidate)
        result["arms"] = {arm: f.as_dict() for arm, f in figures.items()}
        verdict = evaluate(spec, figures, started=since, now=datetime.now(UTC))
        result["verdict"] = {"outcome": verdict.outcome, "reason": verdict.reason}
    return result


@canary_app.command("status")
def status(
    policy: PolicyOption = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The canary's state, its figures per arm (requests, errors, latency, tokens/s, cost,
    quality) and what the guardrails say now."""
    if output not in ("table", "json"):
        raise typer.BadParameter("use table or json", param_hint="--format")
    spec = _spec(policy)
    engine = _engine()
    try:
        result = status_report(engine, spec)
    except OperationalError as exc:
        typer.echo(f"error: cannot read the ledger: {str(exc).splitlines()[0][:300]}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
    if output == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    console = Console() if Console().is_terminal else Console(width=160)
    console.print(
        f"canary {result['canary']}: {result['candidate']} in tier {result['tier']} "
        f"({result['mode']} {result['percent']}%) — {result['status']}: {result['reason']}"
    )
    if result["verdict"]:
        console.print(
            f"guardrails now: {result['verdict']['outcome']} — {result['verdict']['reason']}"
        )
    console.print(_arms_table(result["arms"]))


def _arms_table(arms: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="per arm")
    columns = (
        ("arm", "arm", "{}"),
        ("requests", "requests", "{:,}"),
        ("errors", "error_rate", "{:.1%}"),
        ("p50 ms", "latency_ms_p50", "{:.0f}"),
        ("p95 ms", "latency_ms_p95", "{:.0f}"),
        ("tok/s", "tokens_per_s", "{:.1f}"),
        ("cost $", "cost_usd", "{:.6f}"),
        ("quality", "quality", "{:.3f}"),
        ("feedback", "feedback", "{:.3f}"),
    )
    for header, *_ in columns:
        table.add_column(header, justify="left" if header == "arm" else "right")
    for figures in arms.values():
        table.add_row(
            *("—" if figures[key] is None else fmt.format(figures[key]) for _, key, fmt in columns)
        )
    return table


def _decide(policy: Path | None, action: Action, reason: str) -> None:
    loaded, spec = _loaded(policy)
    engine = _engine()
    try:
        latest = latest_event(engine, spec.name, spec.candidate)
        if latest is None:
            typer.echo(
                f"error: canary {spec.name!r} has not started: start a gateway first", err=True
            )
            raise typer.Exit(code=1)
        allowed = {
            "promote": ("running", "ready"),
            "rollback": ("running", "ready", "promoted", "paused"),
            "start": RESTARTABLE,
        }[action]
        if latest.status not in allowed:
            verb = "restart" if action == "start" else action
            typer.echo(
                f"error: canary {spec.name!r} is {latest.status}: cannot {verb} it", err=True
            )
            raise typer.Exit(code=1)
        if action == "start":
            candidate = loaded.backends.get(spec.candidate)
            problem = asyncio.run(pin_problem(spec.pin.digest, candidate))
            if problem is not None:
                typer.echo(f"error: {problem}", err=True)
                raise typer.Exit(code=1)
        figures = arm_figures(
            engine,
            since=started_at(engine, spec.name, spec.candidate) or latest.ts,
            candidate=spec.candidate,
        )
        event = record_event(
            engine,
            CanaryEvent(
                ts=datetime.now(UTC),
                canary=spec.name,
                candidate=spec.candidate,
                action=action,
                actor="cli",
                reason=reason or f"{action} by hand (cli)",
                metrics={"arms": {arm: f.as_dict() for arm, f in figures.items()}},
                follows=latest.id,
            ),
        )
    except Superseded as lost:
        typer.echo(
            f"error: {lost}; your {action} was not recorded: check `tiergate canary status` "
            f"and decide again",
            err=True,
        )
        raise typer.Exit(code=1) from None
    except OperationalError as exc:
        typer.echo(f"error: cannot reach the ledger: {str(exc).splitlines()[0][:300]}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
    typer.echo(
        f"canary {spec.name}: {event.action} recorded; running gateways apply it within "
        f"{spec.evaluate_every_s:g} s (canary.evaluate_every_s)"
    )


ReasonOption = Annotated[str, typer.Option(help="Why (kept in canary_events).")]


@canary_app.command("promote")
def promote(policy: PolicyOption = None, reason: ReasonOption = "") -> None:
    """Make the candidate the stable backend of its tier (in every gateway, until restart of
    the canary); see the README for making it permanent in the policy."""
    _decide(policy, "promote", reason)


@canary_app.command("rollback")
def rollback(policy: PolicyOption = None, reason: ReasonOption = "") -> None:
    """Take the candidate out of traffic at once."""
    _decide(policy, "rollback", reason)


@canary_app.command("restart")
def restart(policy: PolicyOption = None, reason: ReasonOption = "") -> None:
    """Start a rolled-back (or paused) canary again once its candidate is fixed (an Ollama pin
    is checked first); its guardrails count from the restart."""
    _decide(policy, "start", reason or "restarted by hand (cli)")

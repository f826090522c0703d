"""The dashboard's header form: the period shown and the team it is filtered to (with the
teams to pick from), rendered as HTML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.http.dashboard_charts import esc

PERIODS = (
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
)


@dataclass(frozen=True, slots=True)
class Form:
    """What the header's form shows: the period, and the team (with the teams to pick from)."""

    since: str
    until: str | None = None
    team: str | None = None
    teams: tuple[str, ...] = ()


def team_note(team: str | None) -> str:
    if not team:
        return ""
    return f' · team <code data-testid="team">{esc(team)}</code>'


def _team_select(team: str | None, teams: Sequence[str]) -> str:
    names = list(teams)
    if team and team not in names:
        names.append(team)
    if not names:
        return ""
    options = ['<option value="">All teams</option>']
    options += [
        f'<option value="{esc(name)}"{" selected" if name == team else ""}>{esc(name)}</option>'
        for name in names
    ]
    return (
        '<label for="team">Team</label>'
        f'<select id="team" name="team" data-testid="team-select">{"".join(options)}</select>'
    )


def period_form(form: Form) -> str:
    since, until = form.since, form.until
    options = list(PERIODS)
    if since not in {value for value, _ in PERIODS}:
        options.append((since, f"Since {since}"))
    rendered = "".join(
        f'<option value="{esc(value)}"{" selected" if value == since else ""}>{esc(label)}</option>'
        for value, label in options
    )
    hidden = f'<input type="hidden" name="until" value="{esc(until)}">' if until else ""
    return (
        '<form method="get" class="period-form"><label for="since">Period</label>'
        f'<select id="since" name="since">{rendered}</select>{hidden}'
        f"{_team_select(form.team, form.teams)}"
        '<button type="submit">Show</button></form>'
    )

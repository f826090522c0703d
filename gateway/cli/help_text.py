"""``tiergate --help`` as a person reads it: a command's row is its docstring's first paragraph
as one sentence (Typer's rich help keeps the docstring's line breaks there), and an on/off flag
(``--help``, ``--json``) shows no ``<bool>`` type, since it takes no value."""

from __future__ import annotations

import inspect
from typing import Any

# Typer (0.29) builds its commands on the click it carries, not the installed one.
from typer._click.core import Command
from typer.core import TyperGroup, TyperOption


class TidyGroup(TyperGroup):
    """The root group (``typer.Typer(cls=TidyGroup)``): every command under it, at any depth,
    tidied once it is built."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        tidy(self)


def summary(text: str) -> str:
    """A docstring's first paragraph on one line (Typer's ``\\f`` cut honoured)."""
    first = inspect.cleandoc(text).partition("\f")[0].split("\n\n")[0]
    return " ".join(first.split())


def tidy(command: Command) -> None:
    context = command.context_class(command, **command.context_settings)
    for param in [*command.params, command.get_help_option(context)]:
        if isinstance(param, TyperOption) and param.is_flag and not param.count:
            param.metavar = param.metavar or ""  # no "<bool>" beside a flag
    subcommands: dict[str, Command] = getattr(command, "commands", {})
    for sub in subcommands.values():
        if sub.short_help is None and sub.help:
            sub.short_help = summary(sub.help)
        tidy(sub)

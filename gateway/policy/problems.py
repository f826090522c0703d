"""What is wrong with a policy: ``Problem`` (a path in the file and what to do about it) and
``PolicyError``, the policy that cannot be used, one line per problem in the form
``file: path.to.field: what is wrong and how to fix it (line N)``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a policy file: where (a dotted path in the file, ``(file)``, a line
    and column) and what, with how to fix it; ``line``, where the path is in the file's text
    (``lines.with_lines``), when it is known."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        at = "" if self.line is None else f" (line {self.line})"
        return f"{self.path}: {self.message}{at}"


class PolicyError(Exception):
    """A policy that cannot be used. ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))

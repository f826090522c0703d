"""What is wrong with a policy: ``Problem`` (a path in the file and what to do about it) and
``PolicyError``, the policy that cannot be used, one line per problem in the form
``file: path.to.field: what is wrong and how to fix it``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a policy file: where (a dotted path in the file, ``(file)``, a line
    and column) and what, with how to fix it."""

    path: str
    message: str


class PolicyError(Exception):
    """A policy that cannot be used. ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {p.path}: {p.message}" for p in self.problems))

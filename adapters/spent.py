"""What a call its caller gave up on had already cost: the caller cancelled it (the client went
away), so no ``Completion`` carries its usage, yet the work done before the stop was real and is
billed like any other.

The caller (the gateway's pipeline) opens ``noting()`` around its backend calls. An adapter that
knows what a cancelled call spent says so with ``spent(usage)`` before the cancellation goes on:
an in-process model (``adapters._in_process``) knows the prompt it read and the tokens it
generated before it stopped, exactly. An HTTP backend cancelled before it answered says nothing
(what the provider generated meanwhile is not known here); its caller estimates.

A context variable carries the note, so tasks started inside ``noting()`` (``n > 1``'s extra
choices) report into the same one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from adapters.chat import Usage


@dataclass(slots=True)
class Spent:
    """The usages of the calls given up on inside one ``noting()``, as they were reported."""

    usages: list[Usage] = field(default_factory=list)


_current: ContextVar[Spent | None] = ContextVar("tiergate_spent", default=None)


@contextlib.contextmanager
def noting() -> Iterator[Spent]:
    """Collect what calls given up on inside this block spent (``spent``)."""
    note = Spent()
    token = _current.set(note)
    try:
        yield note
    finally:
        _current.reset(token)


def spent(usage: Usage) -> None:
    """A call given up on had cost ``usage`` by the time it stopped (nobody noting: dropped)."""
    note = _current.get()
    if note is not None:
        note.usages.append(usage)

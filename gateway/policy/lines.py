"""Where a problem's path is in the policy's text: the line of ``tiers[1].backends[0]``, so an
operator reading ``policy_rejected`` (or ``tiergate policy check``) goes straight to it.

The YAML is composed again (nodes keep their marks; the loaded dict does not). A path is
followed as far as the file has it: a field that is missing (``tiers[1].max_score``) is put at
the line of the entry that lacks it; a path the file does not have at all, none.
"""

from __future__ import annotations

import re

import yaml

from gateway.policy.problems import Problem

_INDEX = re.compile(r"\[(\d+)\]")


def with_lines(problems: list[Problem], data: bytes) -> list[Problem]:
    """``problems`` with the line of each one's path in ``data`` (the policy's bytes), where
    the file has it."""
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return problems
    if root is None:
        return problems
    return [
        p if p.line is not None else Problem(p.path, p.message, line_of(root, p.path))
        for p in problems
    ]


def line_of(root: yaml.Node, path: str) -> int | None:
    """The 1-based line of ``path`` (``a.b[2].c``; a key may hold dots) under ``root``: the key's
    own line for a mapping's field, else the deepest node the file has on the way."""
    node, rest, line = root, path, None
    while rest:
        if isinstance(node, yaml.SequenceNode):
            match = _INDEX.match(rest)
            if match is None or int(match.group(1)) >= len(node.value):
                break
            node = node.value[int(match.group(1))]
            line, rest = node.start_mark.line + 1, rest[match.end() :].removeprefix(".")
        elif isinstance(node, yaml.MappingNode):
            found = _field(node, rest)
            if found is None:
                break
            key, node = found
            line, rest = key.start_mark.line + 1, rest[len(str(key.value)) :].removeprefix(".")
        else:
            break
    return line


def _field(node: yaml.MappingNode, rest: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The key (and its value) that ``rest`` begins with: the longest, since a key may hold a
    dot (a backend named ``gpt-4.1``); of a key the mapping repeats, the last, as the loader
    keeps the last one's value (the first is not where the problem is)."""
    fitting = [
        (key, value)
        for key, value in reversed(node.value)
        if rest == str(key.value) or rest.startswith((f"{key.value}.", f"{key.value}["))
    ]
    return max(fitting, key=lambda pair: len(str(pair[0].value)), default=None)

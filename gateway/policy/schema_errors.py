"""Pydantic's validation errors of a policy file turned into problems a person can act on: the
path as written in the file (without the tag pydantic inserts for a backend's type), the valid
fields beside an unknown one, the valid backend types, never a secret's value echoed."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ValidationError

from adapters import BACKEND_TYPES
from adapters.config import (
    ArtifactConfig,
    FakeConfig,
    OllamaConfig,
    OpenAICompatConfig,
    RemoteConfig,
    TinyConfig,
)
from gateway.policy.checks import extra_problems, reference_problems
from gateway.policy.problems import Problem
from gateway.policy.schema import PolicyFile, RouteSpec

_BACKEND_MODELS: dict[str, type[BaseModel]] = {
    "tiny": TinyConfig,
    "ollama": OllamaConfig,
    "openai_compat": OpenAICompatConfig,
    "remote": RemoteConfig,
    "artifact": ArtifactConfig,
    "fake": FakeConfig,
}


def validation_problems(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    """Each of the schema's errors at its path in the file, said so a person can act on it."""
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    deeper = [e["loc"] for e in errors]
    for error in errors:
        loc = error["loc"]
        # A list emptied by its own item's error ("tiers: at least 1 item") says nothing new.
        if error["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other in deeper
        ):
            continue
        loc = _clean_loc(loc, raw)
        path = _dotted(loc) or "(top)"
        problems.append(Problem(path, _message(error, loc, raw)))
    return problems


def problems_beside_unknown_fields(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    """When every schema error is an unknown field, the reference problems of the file without
    those fields (an unknown backend in a tier, say): a misspelt field and a misspelt name are
    reported in one run, not one after the other."""
    errors = exc.errors(include_url=False)
    if any(error["type"] != "extra_forbidden" for error in errors):
        return []
    pruned = copy.deepcopy(raw)
    try:
        for error in errors:
            *parents, last = _clean_loc(error["loc"], raw)
            node: Any = pruned
            for part in parents:
                node = node[part]
            del node[last]
        spec = PolicyFile.model_validate(pruned)
    except (KeyError, IndexError, TypeError, ValueError):  # ValidationError is a ValueError
        return []
    return [*reference_problems(spec), *extra_problems(spec)]


def _clean_loc(loc: tuple[int | str, ...], raw: dict[str, Any]) -> tuple[int | str, ...]:
    """Drop the tag pydantic inserts for tagged unions: backends.<name>.<type>.field."""
    if len(loc) >= 3 and loc[0] == "backends":
        section = raw.get("backends")
        entry = section.get(loc[1]) if isinstance(section, dict) else None
        if isinstance(entry, dict) and entry.get("type") == loc[2]:
            return (*loc[:2], *loc[3:])
    return loc


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Any, loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], raw)
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return f"required field missing: add `{loc[-1]}:`"
    if kind == "union_tag_invalid":
        tag = got.get("type") if isinstance(got, dict) else got
        return f"unknown backend type {tag!r}; use one of: {', '.join(BACKEND_TYPES)}"
    if kind == "union_tag_not_found":
        return f"missing `type:`; use one of: {', '.join(BACKEND_TYPES)}"
    if any("key" in str(part) for part in loc):
        return str(error["msg"])  # never echo what might be a secret
    return f"{error['msg']} (got {got!r})"


def _fields_at(loc: tuple[int | str, ...], raw: dict[str, Any]) -> list[str]:
    """The field names the model at ``loc`` accepts, for an 'unknown field' hint."""
    model: type[BaseModel] | None = PolicyFile
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "backends":
        entry = raw.get("backends", {}).get(parts[1])
        tag = entry.get("type") if isinstance(entry, dict) else None
        model = _BACKEND_MODELS.get(tag) if isinstance(tag, str) else None
        parts = parts[2:]
    elif len(parts) >= 2 and parts[0] == "routes":
        model = RouteSpec
        parts = parts[2:]
    for part in parts:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _nested_model(field.annotation)
    return list(model.model_fields) if model is not None else []


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return current
        stack.extend(getattr(current, "__args__", ()))
    return None

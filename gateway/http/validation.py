"""Pydantic's validation errors as API errors: a message naming the field, and ``param`` holding
its path from the body's root (``messages[0].content[1].text``), as OpenAI reports it.

Pydantic's ``loc`` mixes the body's field names and list indices with the names it gives union
branches: a tagged union's tag (``input_text``), a plain union's member (``str``,
``list[...]``, ``literal['auto','none']``, a class name, ``function-after[...]``). Which part
is which is read off the request model itself (``field_path``), never guessed from the
spelling, so a field that happens to share a tag's name (``text``, for instance) is kept and
no branch name ever reaches ``param``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.errors import BadRequest

Loc = tuple[int | str, ...]

_UPSTREAM_FIELDS = frozenset(
    ("api_base", "base_url", "api_key", "headers", "extra_headers", "custom_llm_provider", "url")
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEQUENCES = (list, tuple, set, frozenset, Sequence)


def validation_error(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    *,
    role_hints: Mapping[str, str] | None = None,
) -> BadRequest:
    """The first problem of ``exc`` (raised validating ``model``) as a 400. ``role_hints``
    say, per role the API does not take, where that content goes instead."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadRequest(
            f"the request body is not valid JSON: {first['ctx'].get('error', first['msg'])}",
            code="invalid_json",
        )
    if first["type"] == "model_type" and not first["loc"]:
        return BadRequest("the request body must be a JSON object", code="invalid_json")
    paths = [_path(error, model) for error in errors]
    loc = paths[0]
    # A plain union reports one error per branch, the plainest first ("should be a valid
    # string"); the error that got furthest into the same field says more.
    at = max(
        (i for i, path in enumerate(paths) if path[: len(loc)] == loc),
        key=lambda i: len(paths[i]),
    )
    chosen, loc = errors[at], paths[at]
    param = _param(loc)
    message = _describe(chosen, loc, role_hints or {})
    if chosen["type"] == "missing":
        message += _also_missing(chosen, errors)
    return BadRequest(f"{param}: {message}", param=param, code=chosen["type"])


def plain_param(loc: Loc) -> str | None:
    """``param`` for a ``loc`` whose model is not at hand (FastAPI's own validation)."""
    path = _plain(loc)
    return _param(path) if path else None


def field_path(annotation: Any, loc: Loc) -> Loc:
    """The part of ``loc`` that names fields and list items of ``annotation``: union-branch
    markers dropped, and nothing past a dict's key or a part the annotation does not have."""
    return _walk(annotation, loc)[0]


def _path(error: ErrorDetails, model: type[BaseModel] | None) -> Loc:
    loc = tuple(error["loc"])
    path = field_path(model, loc) if model is not None else _plain(loc)
    # A tagged union's own error (a tag missing or unknown) sits on the union; in an object,
    # the field the client got wrong is the tag's.
    named = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    if isinstance(error.get("input"), dict) and _IDENTIFIER.fullmatch(named):
        path = (*path, named)
    return path


def _also_missing(chosen: ErrorDetails, errors: list[ErrorDetails]) -> str:
    """The other fields missing from the same object (of the same union branch)."""
    parent = tuple(chosen["loc"][:-1])
    others = [
        str(e["loc"][-1])
        for e in errors
        if e["type"] == "missing" and e is not chosen and tuple(e["loc"][:-1]) == parent
    ]
    return f" (also missing: {', '.join(others)})" if others else ""


def _walk(annotation: Any, loc: Loc) -> tuple[Loc, bool]:
    """``loc`` read against ``annotation``: its visible parts, and whether all of it was read."""
    if not loc:
        return (), True
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        for item in metadata:
            if isinstance(item, Discriminator):
                return _tagged(base, loc, item.discriminator)
            if isinstance(item, FieldInfo) and item.discriminator is not None:
                return _tagged(base, loc, item.discriminator)
        return _walk(base, loc)
    if origin is Union or origin is types.UnionType:
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1:  # ``X | None``: pydantic adds no branch marker
            return _walk(members[0], loc)
        return _best(members, loc[1:])  # loc[0] names the branch
    if origin in _SEQUENCES and isinstance(loc[0], int):
        rest, whole = _walk(get_args(annotation)[0] if get_args(annotation) else Any, loc[1:])
        return (loc[0], *rest), whole
    if origin in (dict, Mapping) or annotation is dict:
        return (), True  # a key (and what is wrong with its value) is not a field
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model(annotation, loc)
    if annotation is Any:
        return (), True
    return (), False


def _model(model: type[BaseModel], loc: Loc) -> tuple[Loc, bool]:
    name = loc[0]
    field = _field(model, name)
    if field is None:  # a field the model does not have (refused as an extra)
        return ((name,) if isinstance(name, str) else ()), len(loc) == 1
    if field.discriminator is not None:
        rest, whole = _tagged(field.annotation, loc[1:], field.discriminator)
    else:
        rest, whole = _walk(field.annotation, loc[1:])
    return (name, *rest), whole


def _field(model: type[BaseModel], name: int | str) -> FieldInfo | None:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias, field.validation_alias):
            return field
    return None


def _tagged(union: Any, loc: Loc, key: object) -> tuple[Loc, bool]:
    """A tagged union (``key``: the discriminator's field, or a callable): ``loc[0]`` is the
    tag of the branch that was tried, and not a field."""
    if not loc:  # the error is the union's own (its tag is missing or unknown)
        return (), True
    members = [m for m in get_args(union) if m is not type(None)] or [union]
    if len(members) == 1 and get_origin(members[0]) in (Union, types.UnionType):
        members = [m for m in get_args(members[0]) if m is not type(None)]  # (A | B) | None
    tag, rest = loc[0], loc[1:]
    chosen = [m for m in members if tag in _tags(m, key)]
    return _best(chosen or members, rest)


def _tags(member: Any, key: object) -> set[object]:
    """The tags a tagged union's member answers to: its ``Tag``, or the literal values of its
    discriminator field."""
    if get_origin(member) is Annotated:
        base, *metadata = get_args(member)
        named: set[object] = {m.tag for m in metadata if isinstance(m, Tag)}
        return named or _tags(base, key)
    if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(key, str):
        field = _field(member, key)
        if field is not None and get_origin(field.annotation) is Literal:
            return set(get_args(field.annotation))
    return set()


def _best(members: list[Any], loc: Loc) -> tuple[Loc, bool]:
    """The branch that reads all of ``loc`` (else the one that reads most)."""
    best: tuple[Loc, bool] = ((), False)
    for member in members:
        path, whole = _walk(member, loc)
        if whole:
            return path, True
        if len(path) > len(best[0]):
            best = (path, False)
    return best


def _plain(loc: Loc) -> Loc:
    """Without the model: list indices and names that read as field names, up to the first
    part that does not (a class or a ``list[...]`` branch)."""
    kept: list[int | str] = []
    for part in loc:
        if not kept and isinstance(part, int):
            break  # a position in the body's text (FastAPI's JSON errors), not an item
        if not isinstance(part, int) and not (
            _IDENTIFIER.fullmatch(part) and not part[0].isupper()
        ):
            break
        kept.append(part)
    return tuple(kept)


def _param(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _describe(error: ErrorDetails, loc: Loc, role_hints: Mapping[str, str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        if loc and loc[-1] in _UPSTREAM_FIELDS:
            return (
                "clients cannot choose upstream URLs, keys or headers; the gateway's policy "
                "decides where requests go"
            )
        return "unrecognized request argument"
    if kind == "missing":
        return "required field missing"
    if kind == "too_short" and loc == ("messages",):
        return "must hold at least one message"
    if kind == "literal_error" and loc and loc[-1] == "role":
        given = error.get("input")
        roles = ", ".join(re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", ""))))
        hint = role_hints.get(given) if isinstance(given, str) else None
        return f"unknown role {given!r}; use {roles}" + (f" ({hint})" if hint else "")
    if kind == "model_type":  # pydantic's message names the model's class
        return f"Input should be an object, got {_json_kind(error.get('input'))}"
    if kind.endswith("_type"):
        return f"{error['msg']}, got {_json_kind(error.get('input'))}"
    return str(error["msg"])


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"

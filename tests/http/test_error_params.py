"""Where a refused request went wrong, as every endpoint reports it: ``param`` (in Anthropic's
errors, the message's leading path) is a path through the body a client sent, from its root
(``messages[0].content[1].text``), never a name pydantic gives a union's branch
(``literal['auto','none','required']``, ``MessageItem``, ``input_text``).

Each endpoint's valid body is mutated at every place in it (a wrong value of each JSON kind,
the field removed, an unknown field added) and every refusal is checked.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from gateway.http import anthropic_in, canary, feedback, keys, openai_in, responses_in
from tests.http.helpers import fakes, gateway

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
tiers:
  - {name: only, backends: [small]}
"""
# A field path: snake_case names joined by dots, list indices in brackets.
FIELD_PATH = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*|\[\d+\])*")
IMAGE = "data:image/png;base64,iVBORw0KGgo="
CHAT: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}},
    },
    "stop": ["END"],
    "max_tokens": 5,
    "metadata": {"k": "v"},
}
RESPONSES: dict[str, Any] = {
    "model": "auto",
    "instructions": "Be brief.",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": IMAGE, "detail": "low"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ],
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "tool_choice": {"type": "function", "name": "f"},
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
    "max_output_tokens": 5,
    "stream_options": {"include_obfuscation": False},
}
COUNT_TOKENS: dict[str, Any] = {
    "model": "auto",
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
        },
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "f"},
}
MESSAGES = {
    **COUNT_TOKENS,
    "max_tokens": 5,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u"},
}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "auto", "prompt": "hi", "max_tokens": 5, "stop": ["END"]},
    "/v1/embeddings": {"model": "auto", "input": ["a", "b"], "dimensions": 4},
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": COUNT_TOKENS,
    "/v1/feedback": {"request_id": "r1", "score": 0.5, "comment": "fine"},
    "/admin/policy/explain": CHAT,
    "/admin/keys": {"name": "k", "routes": ["auto"], "rpm": 5, "budget_period": "day"},
    "/admin/canary/promote": {"reason": "looks good"},
}
WRONG: tuple[object, ...] = (5, "x", None, [], {}, [{}], {"type": "zzz"})
# The cases QA reported, by name.
REPORTED: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", {**CHAT, "tool_choice": {"type": "function"}}, "tool_choice.function"),
    ("/v1/chat/completions", {**CHAT, "tool_choice": 5}, "tool_choice"),
    ("/v1/responses", {**RESPONSES, "tool_choice": {"type": "function"}}, "tool_choice.name"),
    ("/v1/responses", {**RESPONSES, "tool_choice": 5}, "tool_choice"),
    (
        "/v1/responses",
        {**RESPONSES, "input": [{"type": "function_call_output"}]},
        "input[0].call_id",
    ),
    (
        "/v1/responses",
        {**RESPONSES, "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
    ),
    ("/v1/responses", {**RESPONSES, "text": {"format": {"type": "xml"}}}, "text.format.type"),
]


def _model_names() -> set[str]:
    modules = (openai_in, responses_in, anthropic_in, feedback, keys, canary)
    return {
        name
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    }


# What a message must never hold: pydantic's names for union branches and the models' classes.
MARKERS = ("literal[", "list[", "union[", "function-after", "function-before", "function-wrap")
CLASSES = re.compile(r"\b(" + "|".join(sorted(_model_names())) + r")\b")


def mutations(body: Any, at: tuple[int | str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """``body`` changed in one place: each value replaced by each of ``WRONG``, each field
    removed, an unknown field added to each object."""
    if isinstance(body, dict):
        yield f"{at}+extra", {**body, "zz_unknown": 1}
        for key, value in body.items():
            yield f"{(*at, key)}-removed", {k: v for k, v in body.items() if k != key}
            for label, changed in _replaced(value, (*at, key)):
                yield label, {**body, key: changed}
    elif isinstance(body, list):
        for i, value in enumerate(body):
            for label, changed in _replaced(value, (*at, i)):
                yield label, [*body[:i], changed, *body[i + 1 :]]


def _replaced(value: Any, at: tuple[int | str, ...]) -> Iterator[tuple[str, Any]]:
    for wrong in WRONG:
        if wrong != value:
            yield f"{at}={json.dumps(wrong)}", copy.deepcopy(wrong)
    yield from mutations(value, at)


def resolves(body: Any, path: str) -> bool:
    """Whether every part of ``path`` but the last (which may be the missing field) is in
    ``body``."""
    parts = re.findall(r"[a-z_][a-z0-9_]*|\[\d+\]", path)
    node = body
    for part in parts[:-1]:
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return False
            node = node[index]
        else:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
    return True


def check(path: str, body: Any, response: httpx.Response) -> str | None:
    """What is wrong with the refusal of ``body`` (None: nothing)."""
    if response.status_code >= 500:
        return f"a {response.status_code}: {response.text}"
    if response.status_code < 400:
        return None
    error = response.json()["error"]
    message = str(error["message"])
    if any(marker in message for marker in MARKERS) or CLASSES.search(message):
        return f"an internal name in the message: {message}"
    if path.startswith("/v1/messages"):
        # Anthropic's errors have no param: a validation error's message starts with the path.
        head = message.split(": ", 1)[0]
        param = head if " " not in head and head != message else None
    else:
        param = error.get("param")
    if param is None or param == "body":
        return None
    if not FIELD_PATH.fullmatch(param):
        return f"param {param!r} is not a field path ({message})"
    if not resolves(body, param):
        return f"param {param!r} is not a path through the body ({message})"
    return None


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with gateway(policy, backends=fakes("small")) as (running, _app):
        yield running


@pytest.mark.parametrize("path", list(BODIES))
async def test_every_refusal_names_a_field_path(client: httpx.AsyncClient, path: str) -> None:
    """Whatever is wrong with a body, and wherever, the refusal's ``param`` is a path through
    it from its root, and its message names no internal class or union branch."""
    base = BODIES[path]
    # The body itself is valid (a feedback's request or a canary may be unknown: 404, 409).
    assert (await client.post(path, json=base)).status_code not in (400, 422)
    problems: list[str] = []
    refused = 0
    for label, body in mutations(base):
        response = await client.post(path, json=body)
        refused += response.status_code >= 400
        problem = check(path, body, response)
        if problem is not None:
            problems.append(f"{label}: {problem}")
    assert refused
    assert problems == []


@pytest.mark.parametrize(("path", "body", "param"), REPORTED)
async def test_the_reported_bodies_name_the_missing_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str
) -> None:
    """The refusals QA reported name the field the client must fix."""
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ")

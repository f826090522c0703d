"""``tiergate policy check|explain`` and ``tiergate score``. Offline: they read the policy file
and never contact a backend (nor import litellm or llama.cpp)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import ValidationError

from adapters.base import ChatRequest, Message
from adapters.config import RemoteConfig
from gateway.environment import policy_variables, unknown_variables
from gateway.errors import BadRequest
from gateway.http.openai_in import parse_chat
from gateway.http.openai_requests import chat_request
from gateway.log import standalone_logger
from gateway.policy import Policy, PolicyError, UnknownRoute, load_policy
from gateway.routing.explain import explain, render
from gateway.routing.pool import disabled_reason
from gateway.settings import Settings

policy_app = typer.Typer(help="Check and explain policy files.", no_args_is_help=True)


def settings_or_exit(*, options: Collection[str] = (), **overrides: object) -> Settings:
    """The process settings; a bad ``TIERGATE_*`` value is a one-line error, not a traceback.
    ``options``: the settings the command line gave (``port`` for ``--port``), named as the
    option in an error, not as the variable. The first call also warns about ``TIERGATE_*``
    variables that no setting reads (a typo would otherwise be ignored in silence)."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                field = "_".join(str(p) for p in error["loc"])
                name = f"--{field}" if field in options else f"TIERGATE_{field.upper()}"
                message = f"{name}: {message}"
            typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2) from None
    _warn_unknown_variables(settings)
    return settings


_warned: set[str] = set()


def _warn_unknown_variables(settings: Settings) -> None:
    """One warning log line per ``TIERGATE_*`` variable nothing reads, once per process."""
    if not [n for n, _ in unknown_variables(os.environ) if n not in _warned]:
        return
    # Only now read the policy: a backend's api_key_env may be a TIERGATE_* name of its own.
    also = policy_variables(settings.policy)
    unknown = [(n, m) for n, m in unknown_variables(os.environ, also) if n not in _warned]
    if not unknown:
        return
    log = standalone_logger(settings.log_level, settings.log_format, settings.secrets())
    for name, meant in unknown:
        _warned.add(name)
        hint = f"; did you mean {meant}?" if meant else ""
        log.warning(
            "unknown_setting",
            variable=name,
            meant=meant,
            detail=f"{name} is not a tiergate setting and is ignored{hint} (the settings: "
            f"README, Configuration and security)",
        )


def _default_policy() -> Path:
    return settings_or_exit().policy


def _load(path: Path) -> Policy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The policy YAML to validate.")],
) -> None:
    """Validate a policy; exit non-zero with `file: path.to.field: problem` lines."""
    policy = _load(file)
    for name, config in policy.backends.items():
        reason = disabled_reason(config)
        if reason:
            typer.echo(f"{file}: backends.{name}: note: {reason}", err=True)
    for name in policy.prices.unpriced():
        typer.echo(
            f"{file}: pricing.backends.{name}: note: no price; its requests are reported as "
            f"unpriced (give usd_per_1m_input/usd_per_1m_output or hardware)",
            err=True,
        )
    if policy.prices.baseline is None:
        remote = next(
            (n for n in policy.tiers[-1].backends if isinstance(policy.backends[n], RemoteConfig)),
            None,
        )
        why = (
            "no remote backend in the last tier"
            if remote is None
            else f"the last tier's remote backend {remote!r} has a model litellm's price map "
            f"does not know and no price under pricing.backends"
        )
        typer.echo(
            f"{file}: pricing.baseline: note: no baseline ({why}), so reports cannot show "
            f"savings; set pricing.baseline.model (e.g. openai/gpt-4o) or its usd_per_1m prices",
            err=True,
        )
    tiers = ", ".join(f"{t.name}≤{t.max_score:g}" for t in policy.tiers)
    typer.echo(
        f"{file}: ok (hash {policy.hash}; {len(policy.backends)} backends; tiers {tiers}; "
        f"routes {', '.join(policy.routes)})"
    )


@policy_app.command("explain")
def explain_cmd(
    file: Annotated[Path, typer.Argument(help="The policy YAML.")],
    prompt: Annotated[str | None, typer.Option(help="The user prompt to route.")] = None,
    system: Annotated[str | None, typer.Option(help="An optional system prompt.")] = None,
    model: Annotated[
        str | None, typer.Option(help="The request's model field (a route or backend).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    body: Annotated[
        Path | None,
        typer.Option(
            help="A whole OpenAI chat request body (JSON file; tools, response_format, images "
            "count), instead of --prompt.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    tools: Annotated[bool, typer.Option("--tools", help="As if the request sent tools.")] = False,
    json_mode: Annotated[
        bool, typer.Option("--json-mode", help='As if response_format were "json_object".')
    ] = False,
    image: Annotated[bool, typer.Option("--image", help="As if the prompt had an image.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="As a streamed request.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the score, the features, the needed capabilities, the chosen tier, the ordered
    candidates (and those the capability filter excluded) and why."""
    policy = _load(file)
    try:
        request = _explain_request(
            body, prompt, system, max_tokens, tools=tools, json_mode=json_mode, image=image
        )
        if model is None and body is not None:
            model = json.loads(body.read_text()).get("model")
        result = explain(policy, request.messages, model=model, request=request, stream=stream)
    except (UnknownRoute, BadRequest) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(json.dumps(result, indent=2) if as_json else render(result))


def _explain_request(
    body: Path | None,
    prompt: str | None,
    system: str | None,
    max_tokens: int | None,
    *,
    tools: bool,
    json_mode: bool,
    image: bool,
) -> ChatRequest:
    """The request ``policy explain`` routes: a body file, or one built from the flags."""
    if body is not None:
        raw = body.read_bytes()
    elif prompt is not None:
        content: Any = prompt
        if image:
            url = "https://example.com/image.png"
            content = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": content})
        payload: dict[str, Any] = {"messages": messages}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if tools:
            payload["tools"] = [{"type": "function", "function": {"name": "example_tool"}}]
        if json_mode:
            payload["response_format"] = {"type": "json_object"}
        raw = json.dumps(payload).encode()
    else:
        raise BadRequest("give --prompt or --body")
    return chat_request(parse_chat(raw), max_tokens_limit=1 << 30)


def score_cmd(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="JSON lines to score (default: standard input).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy (default: TIERGATE_POLICY).")] = None,
) -> None:
    """Score JSON lines {"id", "prompt"} or {"id", "messages"}; write {"id", "score", "tier"}."""
    loaded = _load(policy or _default_policy())
    if file is None:
        failures = _score_stream(loaded, sys.stdin, sys.stdout)
    else:
        with file.open() as stream:
            failures = _score_stream(loaded, stream, sys.stdout)
    if failures:
        raise typer.Exit(code=1)


def _score_stream(policy: Policy, lines: TextIO, out: TextIO) -> int:
    auto = policy.routes[policy.default_route]
    failures = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            messages = _messages(item)
            max_tokens = _max_tokens(item)
        except (ValueError, TypeError) as exc:
            typer.echo(f"line {number}: {exc}", err=True)
            failures += 1
            continue
        result = policy.score(messages, max_tokens)
        tier = policy.decide(auto, result.value).tier
        out.write(
            json.dumps({"id": item.get("id"), "score": round(result.value, 6), "tier": tier}) + "\n"
        )
    return failures


def _messages(item: Any) -> list[Message]:
    if not isinstance(item, dict):
        raise TypeError('each line must be a JSON object with "prompt" or "messages"')
    if isinstance(item.get("prompt"), str):
        return [Message(role="user", content=item["prompt"])]
    raw = item.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError('missing "prompt" (a string) or "messages" (a non-empty list)')
    messages = []
    for m in raw:
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant") or not isinstance(content, str):
            raise TypeError(f"bad message {m!r}: need a role and string content")
        messages.append(Message(role="system" if role == "developer" else role, content=content))
    return messages


def _max_tokens(item: dict[str, Any]) -> int | None:
    value = item.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'"max_tokens" must be a positive integer or null, got {value!r}')
    return value

"""How the remote adapter turns what litellm raises into the package's ``BackendError``s.

litellm maps each provider's failures onto OpenAI-style exception classes; the class says most,
and the exception chain says the rest (a transport error, the provider's HTTP status, or
neither: an answer litellm could not read). The provider's own words are kept in the message,
stripped of litellm's prefixes and of anything that looks like a key: providers echo masked
keys, and the message reaches logs and clients.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx

from adapters.config import RemoteConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    parse_retry_after,
)
from adapters.remote.wire import MalformedAnswer

_KEY_LIKE = (
    (re.compile(r"(?i)\b(?:sk|pk|rk)-[A-Za-z0-9*_.\-]{3,}"), "[redacted]"),
    (re.compile(r"[\w\-]*\*{3,}[\w\-]*"), "[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1[redacted]"),
)
_PREFIX = re.compile(r"^(?:(?:litellm\.)?\w+(?:Error|Exception):\s*)+")
# litellm's advice to its own callers, and object reprs that say nothing to an operator.
_NOISE = re.compile(r"\s*Handle with `litellm\.\w+`\.?|\s*ssl:<[^>]*>")
_DETAIL_LIMIT = 300


def secrets_in_environment(key_env: str | None) -> tuple[str, ...]:
    """What to keep out of error messages: the key in the variable ``key_env`` and, as with
    litellm's default variable we do not know which one it read, every credential-looking
    variable, so a provider echoing it still cannot leak it."""
    key = os.environ.get(key_env, "").strip() if key_env is not None else ""
    found = [
        value
        for name, value in os.environ.items()
        if re.search(r"(KEYS?|TOKEN|SECRET)$", name.upper()) and len(value) >= 8
    ]
    return (key, *found) if key else tuple(found)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` without the given secrets or anything shaped like an API key."""
    for secret in secrets:
        if len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _KEY_LIKE:
        text = pattern.sub(replacement, text)
    return text


def upstream_detail(exc: BaseException) -> str:
    """The provider's own words from a litellm exception, without litellm's prefixes."""
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    marker = re.search(r"\w*Exception - ", text)
    text = text[marker.end() :] if marker else _PREFIX.sub("", text)
    text = text.split(" Original exception:", 1)[0]
    text = _NOISE.sub("", text).strip()
    if text.startswith("{"):  # Anthropic-style error body
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def retry_after(exc: BaseException) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` of the provider's answer
    (litellm keeps those headers in ``litellm_response_headers`` or on a chained response)."""
    for error in _chain(exc):
        response = getattr(error, "response", None)
        candidates = (
            getattr(error, "litellm_response_headers", None),
            getattr(error, "headers", None),
            response.headers if isinstance(response, httpx.Response) else None,
        )
        for headers in candidates:
            if not isinstance(headers, Mapping) or not headers:
                continue
            lowered = {str(k).lower(): str(v) for k, v in headers.items()}
            millis = parse_retry_after(lowered.get("retry-after-ms"))
            if millis is not None:
                return millis / 1000.0
            seconds = parse_retry_after(lowered.get("retry-after"))
            if seconds is not None:
                return seconds
    return None


def key_hint(config: RemoteConfig) -> str:
    """What to check when the provider refuses the credentials."""
    env = config.api_key_env
    if env is not None:
        return f"check the key in ${env} (valid, not revoked, allowed to use this model)"
    return (
        "check the key litellm read from the provider's default variable (e.g. "
        "OPENAI_API_KEY), or set `api_key_env` of this backend"
    )


def as_backend_error(
    exc: Exception,
    *,
    backend: str,
    config: RemoteConfig,
    litellm: Any,
    context_window: int | None,
    secrets: Iterable[str] = (),
) -> BackendError:
    """The ``BackendError`` for anything litellm raised; provider words are redacted.
    ``litellm`` is the imported module (its exception classes), ``context_window`` the model's
    (for the message when a prompt does not fit), ``secrets`` what to keep out of messages."""
    model = config.model
    timeout_s = config.timeout_s
    if isinstance(exc, MalformedAnswer):
        return BackendBadResponse(
            backend,
            f"{model} answered without a readable message ({exc}): check that `api_base` "
            f"points at the provider's API",
        )
    errors = litellm.exceptions
    detail = redact(upstream_detail(exc), secrets)
    said = f" (the provider said: {detail})" if detail else ""
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    chain = list(_chain(exc))

    if isinstance(exc, errors.RateLimitError) or status == 429:
        wait = retry_after(exc)
        when = f"retry after {wait:g} s" if wait is not None else "retry later"
        return BackendRateLimited(
            backend,
            f"{model} is rate limited{said}: {when}, raise the account's limits, or let the "
            f"policy fall back to another backend",
            retry_after=wait,
            status_code=status or 429,
        )
    if isinstance(exc, errors.Timeout) or any(isinstance(e, httpx.TimeoutException) for e in chain):
        return BackendTimeout(
            backend,
            f"{model} did not answer within timeout_s={timeout_s:g}: lower max_tokens, raise "
            f"`timeout_s` of this backend, or let the policy fall back",
        )
    auth = isinstance(exc, errors.AuthenticationError | errors.PermissionDeniedError)
    if auth or status in (401, 403):
        return BackendRejected(
            backend,
            f"the provider refused the credentials for {model}{said}: {key_hint(config)}",
            status_code=status,
        )
    if isinstance(exc, errors.ContextWindowExceededError):
        window = f" ({context_window} tokens)" if context_window else ""
        return BackendRejected(
            backend,
            f"the prompt plus max_tokens do not fit {model}'s context window{window}{said}: "
            f"shorten the conversation, lower max_tokens, or route long prompts elsewhere",
            status_code=400,
        )
    if isinstance(exc, errors.NotFoundError) or status == 404:
        # Unavailable, not rejected: the request is fine, this backend is misconfigured, and
        # another backend may well answer it (the same rule as Ollama's missing model).
        return BackendUnavailable(
            backend,
            f"the provider has no model {model!r}, or this key may not use it{said}: fix `model:` "
            f"of this backend (litellm's provider/model form, e.g. openai/gpt-4o-mini)",
        )
    if isinstance(exc, errors.ContentPolicyViolationError):
        return BackendRejected(
            backend,
            f"{model}'s content policy refused this request{said}: rephrase it or route it to "
            f"another backend",
            status_code=400,
        )
    if isinstance(exc, errors.BadRequestError | errors.UnprocessableEntityError) or (
        status is not None and 400 <= status < 500
    ):
        return BackendRejected(
            backend,
            f"{model} refused the request as invalid{said}: check the messages and the sampling "
            f"parameters the policy sends to this backend",
            status_code=status,
        )
    transport = next((e for e in chain if isinstance(e, httpx.TransportError)), None)
    if transport is not None:
        return BackendUnavailable(
            backend,
            f"could not reach the provider of {model} ({type(transport).__name__}: "
            f"{detail or 'no detail'}): check the network and `api_base`, or let the policy "
            f"fall back",
        )
    statuses = [e.response.status_code for e in chain if isinstance(e, httpx.HTTPStatusError)]
    upstream = statuses[0] if statuses else None
    if (upstream is not None and upstream >= 500) or (
        isinstance(exc, errors.ServiceUnavailableError | errors.BadGatewayError)
        and not isinstance(exc, errors.MidStreamFallbackError)
    ):
        code = f" HTTP {upstream}" if upstream is not None else ""
        return BackendUnavailable(
            backend,
            f"the provider of {model} failed with{code or ' a server error'}{said}: retry later or "
            f"let the policy fall back to another backend",
            status_code=upstream if upstream is not None else _server_status(status),
        )
    if isinstance(
        exc,
        errors.InternalServerError
        | errors.APIError
        | errors.APIConnectionError
        | errors.APIResponseValidationError
        | errors.ServiceUnavailableError,
    ):
        return BackendBadResponse(
            backend,
            f"the provider of {model} answered something litellm could not read{said}: check "
            f"that `api_base` points at the provider's API, or let the policy fall back",
            status_code=_server_status(status),
        )
    return BackendUnavailable(
        backend,
        f"litellm failed before {model} answered ({type(exc).__name__}){said}: check this "
        f"backend's `model` and `api_base`",
    )


def _server_status(status: int | None) -> int | None:
    """litellm's ``status_code`` when it is a server error's (5xx), else None: litellm sets
    one on exceptions it raised itself too, where it says nothing about the upstream."""
    return status if status is not None and status >= 500 else None

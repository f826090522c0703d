"""Pure mapping between our chat types and Ollama's native ``/api/chat``, and between the
``ollama`` client's exceptions and ours. No I/O here, so the sync and async paths share it.

Ollama reports durations in nanoseconds
(https://github.com/ollama/ollama/blob/main/docs/api.md#durations); we speak milliseconds. Its
errors arrive from the ``ollama`` client (0.6) as:

* ``ollama.ResponseError(error, status_code)``: an HTTP error status, with the body's ``error``
  text; or, with ``status_code == -1``, an ``{"error": ...}`` line in the middle of a stream;
* builtin ``ConnectionError``: a refused connection on a non-streamed call; a streamed call lets
  ``httpx.ConnectError`` through instead, and every call lets ``httpx.TimeoutException`` and
  other ``httpx.TransportError`` through;
* ``json.JSONDecodeError`` / ``pydantic.ValidationError`` (both ``ValueError``), ``TypeError``
  or ``AttributeError`` when a body or NDJSON line is not the JSON object it expects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import ollama

from adapters._openai_shape import plain, tools_json
from adapters.base import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    Timings,
    ToolCall,
    Usage,
    normalise_finish_reason,
)
from adapters.capabilities import Capabilities
from adapters.config import OllamaConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)

NS_PER_MS = 1_000_000

# Rough English average, used only when Ollama leaves a count out; such usage is marked estimated.
CHARS_PER_TOKEN = 4
# What a chat template adds around each message (role markers, separators), for the estimate.
TEMPLATE_TOKENS_PER_MESSAGE = 4

# Everything the ``ollama`` client lets escape for a failed call (see the module docstring).
WIRE_ERRORS: tuple[type[BaseException], ...] = (
    ollama.ResponseError,
    ollama.RequestError,
    httpx.HTTPError,
    ConnectionError,
    ValueError,
    TypeError,
    AttributeError,
)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """The arguments of one ``client.chat(...)`` call, apart from ``stream``."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any] | None
    keep_alive: str | float
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None

    def body(self, *, stream: bool) -> dict[str, Any]:
        """The JSON body of ``POST /api/chat``. Sent as it is, not through the ``ollama``
        client's typed request: that one drops what its models lack (nested tool-parameter
        schemas, for one), and everything the app sent must arrive."""
        out: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "stream": stream,
            "keep_alive": self.keep_alive,
        }
        if self.options is not None:
            out["options"] = self.options
        if self.tools:
            out["tools"] = self.tools
        if self.format is not None:
            out["format"] = self.format
        return out


class UnsupportedInput(ValueError):
    """A request this backend cannot carry (the adapter turns it into ``BackendRejected``)."""


# --- request --------------------------------------------------------------------------------


def build_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Ollama's message objects (https://github.com/ollama/ollama/blob/main/docs/api.md#chat).

    An assistant turn's tool calls carry their arguments as a JSON *object*; a tool result
    names its function in ``tool_name`` (found through ``tool_call_id``, or the message's
    ``name``); images go as base64 in ``images`` (only ``data:`` URLs: Ollama cannot fetch
    one, and the gateway does not fetch URLs for it). Ollama has no field for the name of
    other speakers, so it is dropped.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                names[call.id] = call.name
                calls.append({"function": {"name": call.name, "arguments": _arguments(call)}})
            item["tool_calls"] = calls
        if message.role == "tool":
            tool_name = message.name or names.get(message.tool_call_id or "")
            if tool_name:
                item["tool_name"] = tool_name
        if message.images:
            item["images"] = [_base64_image(image.url, index) for image in message.images]
        out.append(item)
    return out


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        raise UnsupportedInput(
            f"the arguments of tool call {call.id!r} are not JSON; Ollama needs a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise UnsupportedInput(f"the arguments of tool call {call.id!r} are not a JSON object")
    return value


def _base64_image(url: str, index: int) -> str:
    head, comma, data = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise UnsupportedInput(
            f"messages[{index}]: Ollama takes images inline only: send them as "
            f"data:image/...;base64 URLs, not links"
        )
    return data


def build_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """``tools`` in OpenAI's shape, which Ollama takes as it is. Ollama has no ``tool_choice``:
    ``none`` leaves the tools out; ``required`` and a named function cannot be enforced."""
    if not request.tools or (request.tool_choice and request.tool_choice.mode == "none"):
        return None
    return tools_json(request)


def build_format(request: ChatRequest) -> str | dict[str, Any] | None:
    """``format``: ``"json"`` for JSON mode, the schema itself for a JSON schema."""
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt.type == "json_object":
        return "json"
    schema: dict[str, Any] = plain(fmt.schema or {})
    return schema


def build_options(request: ChatRequest | None, num_ctx: int | None) -> dict[str, Any] | None:
    """The ``options`` object: only what the request set, plus ``num_ctx`` from the config.

    ``num_ctx`` goes on every call, prewarm included: Ollama reloads a model whose context size
    changes, so a prewarm without it would load the model twice.
    """
    options: dict[str, Any] = {}
    if request is not None:
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.top_k is not None:
            options["top_k"] = request.top_k
        if request.stop:
            options["stop"] = list(request.stop)
        if request.seed is not None:
            options["seed"] = request.seed
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    return options or None


def build_call(request: ChatRequest, config: OllamaConfig) -> ChatCall:
    """The ``/api/chat`` call for ``request``."""
    return ChatCall(
        model=config.model,
        messages=build_messages(request.messages),
        options=build_options(request, config.num_ctx),
        keep_alive=config.keep_alive,
        tools=build_tools(request),
        format=build_format(request),
    )


def build_prewarm_call(config: OllamaConfig) -> ChatCall:
    """Ollama's documented way to load a model: a chat with no messages
    (https://github.com/ollama/ollama/blob/main/docs/api.md#load-a-model-1)."""
    return ChatCall(
        model=config.model,
        messages=[],
        options=build_options(None, config.num_ctx),
        keep_alive=config.keep_alive,
    )


# --- response -------------------------------------------------------------------------------


def ns_to_ms(value: int | None) -> float | None:
    """Nanoseconds (Ollama's unit) to milliseconds; ``None`` stays ``None``."""
    return None if value is None else value / NS_PER_MS


def estimate_tokens(text: str) -> int:
    """A rough token count, for when Ollama does not report one."""
    return -(-len(text) // CHARS_PER_TOKEN)


def usage_from(
    response: ollama.ChatResponse, messages: Sequence[Message], completion: str
) -> Usage:
    """Ollama's counts, or an estimate (marked as such) for any count it left out."""
    prompt = response.prompt_eval_count
    generated = response.eval_count
    estimated = prompt is None or generated is None
    if prompt is None:
        prompt = sum(estimate_tokens(m.content) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
    if generated is None:
        generated = estimate_tokens(completion)
    return Usage(prompt_tokens=prompt, completion_tokens=generated, estimated=estimated)


def timings_from(
    response: ollama.ChatResponse, latency_ms: float, ttft_ms: float | None
) -> Timings:
    """Our wall times, with the server's ``total_duration`` and ``load_duration``."""
    return Timings(
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        server_ms=ns_to_ms(response.total_duration),
        load_ms=ns_to_ms(response.load_duration),
    )


def finish_reason_of(response: ollama.ChatResponse, max_tokens: int | None) -> FinishReason:
    """``done_reason`` as an OpenAI finish reason. Servers older than 0.2 send none; then a
    reply of exactly ``max_tokens`` tokens is taken to have hit the limit."""
    hit_limit = (
        response.done_reason is None
        and max_tokens is not None
        and response.eval_count is not None
        and response.eval_count >= max_tokens
    )
    return normalise_finish_reason(response.done_reason, hit_limit=hit_limit)


def tool_calls_of(response: ollama.ChatResponse, first_index: int = 0) -> tuple[ToolCall, ...]:
    """The tool calls in one response or stream line, with OpenAI-style ids and arguments as
    JSON text (Ollama sends an object and no id)."""
    calls = response.message.tool_calls or []
    return tuple(
        ToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}",
            name=call.function.name,
            arguments=json.dumps(dict(call.function.arguments or {})),
        )
        for call in calls
    )


def content_of(response: ollama.ChatResponse) -> str:
    """The text in one response or stream line (``None`` and absent read as empty)."""
    return response.message.content or ""


def parse_response(
    response: ollama.ChatResponse,
    request: ChatRequest,
    *,
    text: str,
    backend: str,
    model: str,
    latency_ms: float,
    ttft_ms: float | None,
    tool_calls: tuple[ToolCall, ...] = (),
) -> Completion:
    """A whole answer from the final (or only) response object; ``text`` is the full reply.
    Ollama says ``done_reason: stop`` after tool calls too; OpenAI says ``tool_calls``."""
    finish = finish_reason_of(response, request.max_tokens)
    return Completion(
        text=text,
        finish_reason="tool_calls" if tool_calls and finish == "stop" else finish,
        usage=usage_from(response, request.messages, text),
        timings=timings_from(response, latency_ms, ttft_ms),
        backend=backend,
        model=response.model or model,
        tool_calls=tool_calls,
    )


def listed(model: str, names: Sequence[str]) -> bool:
    """Whether ``/api/tags`` lists ``model``, allowing for the implied ``:latest`` tag."""
    wanted = {model}
    if ":" not in model.rsplit("/", 1)[-1]:
        wanted.add(f"{model}:latest")
    return any(name in wanted for name in names)


# --- errors ---------------------------------------------------------------------------------


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def translate_error(exc: BaseException, *, backend: str, config: OllamaConfig) -> BackendError:
    """Our error for one of ``WIRE_ERRORS``, saying what happened and what to do."""
    url = config.base_url
    model = config.model
    if isinstance(exc, ollama.ResponseError):
        return _from_response_error(exc, backend=backend, config=config)
    if isinstance(exc, httpx.TimeoutException):
        what = "could not connect" if isinstance(exc, httpx.ConnectTimeout) else "did not answer"
        return BackendTimeout(
            backend,
            f"Ollama at {url} {what} within timeout_s={config.timeout_s}; loading a large model "
            f"can take minutes: raise `timeout_s` of this backend, keep the model loaded "
            f"(`prewarm: true`, a longer `keep_alive`), or lower max_tokens",
        )
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return BackendUnavailable(
            backend,
            f"Ollama is not reachable at {url}: start it with `ollama serve` (or the Ollama "
            f"app), or fix `base_url` of this backend",
        )
    if isinstance(exc, httpx.HTTPError):
        return BackendUnavailable(
            backend,
            f"the connection to Ollama at {url} failed ({type(exc).__name__}: {_short(exc)}); "
            f"check that the server is still running (its log says why it stopped)",
        )
    if isinstance(exc, ollama.RequestError):
        return BackendRejected(
            backend, f"the ollama client refused the request ({_short(exc.error)}); fix `model`"
        )
    return BackendBadResponse(
        backend,
        f"Ollama at {url} answered something that is not /api/chat JSON for {model!r} "
        f"({type(exc).__name__}: {_short(exc)}); check that `base_url` is Ollama's own address "
        f"(not its /v1 API or a proxy that rewrites bodies)",
    )


def _from_response_error(
    exc: ollama.ResponseError, *, backend: str, config: OllamaConfig
) -> BackendError:
    url = config.base_url
    model = config.model
    status = exc.status_code
    said = _short(exc.error)
    if "not found" in said and ("model" in said or "pull" in said):
        return BackendUnavailable(
            backend,
            f"Ollama at {url} does not have the model {model!r} ({said}): run "
            f"`ollama pull {model}` on that server, or fix `model` of this backend "
            f"(`ollama list` shows the installed ones)",
        )
    if status == 404:
        return BackendUnavailable(
            backend,
            f"Ollama's API was not found at {url} ({said}): `base_url` must be the server's "
            f"root, such as http://127.0.0.1:11434, without /api or /v1",
        )
    if status in (429, 503):
        return BackendRateLimited(
            backend,
            f"Ollama at {url} is busy ({status}: {said}): retry shortly, let the policy fall "
            f"back to another backend, or raise OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the "
            f"server",
        )
    if status in (401, 403):
        return BackendRejected(
            backend,
            f"Ollama at {url} refused to authorise the request ({status}: {said}): a remote or "
            f"proxied Ollama needs its key in the OLLAMA_API_KEY environment variable of the "
            f"gateway",
            status_code=status,
        )
    if 400 <= status < 500:
        return BackendRejected(
            backend,
            f"Ollama at {url} rejected the request for {model!r} ({status}: {said}); sending it "
            f"again will not help: check the model supports chat and the options are valid",
            status_code=status,
        )
    if status == -1:
        return BackendUnavailable(
            backend,
            f"Ollama at {url} failed while generating with {model!r} ({said}); its server log "
            f"says why (often the model ran out of memory: try a smaller model or `num_ctx`)",
        )
    return BackendUnavailable(
        backend,
        f"Ollama at {url} failed ({status}: {said}); its server log says why (often the model "
        f"does not fit in memory: try a smaller model or `num_ctx`)",
    )


# --- capabilities -----------------------------------------------------------------------------


def capabilities_from_show(
    shown: ollama.ShowResponse, base: Capabilities, *, num_ctx: int | None
) -> Capabilities:
    """Capabilities from ``/api/show``: its ``capabilities`` list (``completion``, ``tools``,
    ``vision``, ``embedding``, ...; servers before 0.6.4 send none, which keeps ``base``) and
    the configured ``num_ctx`` (what the server loads), capped by the model's trained context
    length (``<arch>.context_length`` in ``model_info``)."""
    listed_caps = getattr(shown, "capabilities", None)
    caps = base
    if isinstance(listed_caps, list) and listed_caps:
        names = set(listed_caps)
        tools = "tools" in names
        caps = replace(
            base,
            chat="completion" in names,
            tools=tools,
            parallel_tool_calls=tools,
            vision="vision" in names,
            embeddings="embedding" in names,
            json_mode="completion" in names,
            json_schema="completion" in names,
        )
    info = getattr(shown, "modelinfo", None) or {}
    trained = next(
        (
            v
            for k, v in info.items()
            if k.endswith(".context_length") and isinstance(v, int) and v > 0
        ),
        None,
    )
    # Without num_ctx Ollama loads a model with its own default window (2048-4096 tokens,
    # depending on the version), far below the trained length: then the window stays unknown.
    window = num_ctx if trained is None or num_ctx is None else min(num_ctx, trained)
    return replace(caps, context_window=window)

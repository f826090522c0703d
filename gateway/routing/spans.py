"""What the request path writes on trace spans.

An attempt on a backend is a CLIENT span named and attributed after the OpenTelemetry GenAI
semantic conventions (``{operation} {model}``; ``gen_ai.*`` for what was asked and answered)
plus ``tiergate.*`` for the backend, tier and outcome; its context is what an HTTP upstream
receives as ``traceparent``. The request's server span gets the same ``gen_ai.*`` view of the
whole request (the model asked for is the route) and the gateway's decisions: route, tier,
complexity score, cache outcome, cost. Prompt and answer text only when ``Tracing.content``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from opentelemetry.trace import Span

from adapters.base import ChatRequest, Completion, EmbeddingRequest, Embeddings, Usage
from adapters.errors import BackendError
from gateway import tracing
from gateway.policy import Candidate
from gateway.routing.pool import BackendState
from gateway.tracing import OPERATIONS, Tracing

if TYPE_CHECKING:
    from gateway.policy.pricing import Priced
    from gateway.routing.accounting import Outcome
    from gateway.routing.plan import Plan

_R = TypeVar("_R", ChatRequest, EmbeddingRequest)

# The conventions' provider names for the local backend types; a remote backend says its own
# (litellm's provider: openai, anthropic, ...).
PROVIDERS = {
    "tiny": "llama_cpp",
    "ollama": "ollama",
    "openai_compat": "openai_compat",
    "fake": "tiergate.fake",
}


# The backend types that call an HTTP upstream, which gets the attempt's ``traceparent``.
HTTP_TYPES = frozenset({"ollama", "openai_compat", "remote"})


def _with_headers(kind: type[_R]) -> Callable[[_R, tuple[tuple[str, str], ...]], _R]:
    """``dataclasses.replace(request, trace_headers=headers)`` for ``kind``, in a third less
    time (one C ``attrgetter`` for the other fields, then the class's own ``__init__``):
    it runs once per traced attempt. Needs ``trace_headers`` to be the last field."""
    names = [field.name for field in dataclasses.fields(kind)]
    if names[-1] != "trace_headers" or any(
        f.kw_only or not f.init for f in dataclasses.fields(kind)
    ):
        raise TypeError(
            f"{kind.__name__}: gateway.routing.spans copies it positionally and needs every "
            f"field in __init__, none keyword-only, trace_headers last; keep it that way"
        )
    # attrgetter of several names gives a tuple; of one, the value itself: made a tuple here.
    others: Callable[[Any], tuple[Any, ...]] = (
        attrgetter(*names[:-1])
        if len(names) > 2
        else lambda r: tuple(getattr(r, n) for n in names[:-1])
    )

    make: Callable[..., _R] = kind

    def copy(request: _R, headers: tuple[tuple[str, str], ...]) -> _R:
        return make(*others(request), headers)

    return copy


_COPIES: dict[type, Callable[[Any, tuple[tuple[str, str], ...]], Any]] = {
    ChatRequest: _with_headers(ChatRequest),
    EmbeddingRequest: _with_headers(EmbeddingRequest),
}


def provider(state: BackendState) -> str:
    kind = state.config.type
    if kind == "remote":
        named = state.backend.info.extra.get("provider")
        if isinstance(named, str) and named:
            return named
        model = state.backend.model_id
        return model.split("/", 1)[0] if "/" in model else "openai"
    return PROVIDERS.get(kind, kind)


def start(
    traced: Tracing | None,
    candidate: Candidate,
    state: BackendState,
    request: _R,
    *,
    retry: int = 0,
) -> tuple[Span | None, _R]:
    """An attempt's span (a child of the current request's span), and ``request`` carrying its
    trace context for the upstream; ``(None, request)`` when tracing is off. ``retry`` counts
    the tries on this backend before this one (``tiergate.retry`` when not 0). The functions
    below take that span and do nothing with None."""
    if traced is None:
        return None, request
    model = state.backend.model_id
    operation = "chat" if isinstance(request, ChatRequest) else "embeddings"
    attributes: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider(state),
        "gen_ai.request.model": model,
        "tiergate.backend": candidate.backend,
        "tiergate.tier": candidate.tier,
    }
    if retry:
        attributes["tiergate.retry"] = retry
    if isinstance(request, ChatRequest):
        _sampling(request, attributes)
        if request.seed is not None:
            attributes["gen_ai.request.seed"] = request.seed
        if request.stop:
            attributes["gen_ai.request.stop_sequences"] = request.stop  # a tuple
    span = traced.child(f"{operation} {model}", attributes, tracing.CLIENT)
    if state.config.type not in HTTP_TYPES:
        return span, request  # in-process: no upstream to tell
    copy = _COPIES.get(type(request))
    if copy is None:  # a subclass: the general way
        return span, dataclasses.replace(request, trace_headers=tracing.headers_for(span))
    traced_request: _R = copy(request, tracing.headers_for(span))
    return span, traced_request


def usage(span: Span, used: Usage | None) -> None:
    """The tokens an answer used (a stream's last chunk says)."""
    values: dict[str, tracing.AttributeValue] = {}
    _usage(values, used)
    span.set_attributes(values)


def _usage(values: dict[str, tracing.AttributeValue], used: Usage | None) -> None:
    if used is not None:
        values["gen_ai.usage.input_tokens"] = used.prompt_tokens
        values["gen_ai.usage.output_tokens"] = used.completion_tokens
        if used.cached_tokens:
            values["gen_ai.usage.cache_read.input_tokens"] = used.cached_tokens


def succeeded(span: Span | None, result: object) -> None:
    """A whole answer (or the embeddings) came: what it was, then the span ends."""
    if span is None:
        return
    values: dict[str, tracing.AttributeValue]
    if isinstance(result, Completion):
        values = {
            "gen_ai.response.model": result.model,
            "gen_ai.response.finish_reasons": (result.finish_reason,),
        }
        _usage(values, result.usage)
    elif isinstance(result, Embeddings):
        values = {"gen_ai.response.model": result.model}
        _usage(values, result.usage)
    else:
        values = {}
    span.set_attributes(values)
    span.end()


def ended(span: Span | None, error: BackendError | None) -> None:
    """The attempt is over: it answered, or it failed with ``error`` (its class is the span's
    ``error.type`` and the span's status is ERROR)."""
    if span is None:
        return
    if error is not None:
        tracing.failed(span, type(error).__name__)
    span.end()


def first_chunk(span: Span | None, waited_ms: float) -> None:
    """A stream's first chunk arrived after ``waited_ms``: its time to first token."""
    if span is not None:
        span.set_attribute("tiergate.ttft_ms", waited_ms)


def closed(span: Span | None) -> None:
    """The attempt was given up without a verdict (the client left, the server stopped)."""
    if span is not None:
        span.set_attribute("tiergate.outcome", "closed")
        span.end()


def released(span: Span | None, error: BackendError | None, *, ok: bool) -> None:
    """A stream's backend is released: it ended well (``ok``), failed, or was given up."""
    if ok or error is not None:
        ended(span, error)
    else:
        closed(span)


# --- the request's own spans ---------------------------------------------------------------


def planned(span: Span, plan: Plan) -> None:
    """The scoring and planning step's result."""
    values: dict[str, tracing.AttributeValue] = {
        "tiergate.tier": plan.decision.tier,
        "tiergate.candidates": tuple([c.backend for c in plan.decision.candidates]),
    }
    if plan.score is not None:
        values["tiergate.complexity"] = plan.score.value
    span.set_attributes(values)


def asked(chat: ChatRequest | None, api: str | None, model: str | None, *, stream: bool) -> None:
    """What the client asked for, on the request's span (``chat`` None: embeddings)."""
    span = tracing.server_span()
    if span is None:
        return
    values: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": OPERATIONS.get(api or "chat", "chat")
    }
    if model is not None:
        values["gen_ai.request.model"] = model
    if stream:
        values["tiergate.stream"] = True
    if api is not None:
        values["tiergate.api"] = api
    if chat is not None:
        _sampling(chat, values)
    span.set_attributes(values)


def _sampling(chat: ChatRequest, into: dict[str, tracing.AttributeValue]) -> None:
    """The request's length and sampling settings that it sets, as GenAI attributes."""
    if chat.max_tokens is not None:
        into["gen_ai.request.max_tokens"] = chat.max_tokens
    if chat.temperature is not None:
        into["gen_ai.request.temperature"] = chat.temperature
    if chat.top_p is not None:
        into["gen_ai.request.top_p"] = chat.top_p
    if chat.presence_penalty is not None:
        into["gen_ai.request.presence_penalty"] = chat.presence_penalty
    if chat.frequency_penalty is not None:
        into["gen_ai.request.frequency_penalty"] = chat.frequency_penalty


def settled(outcome: Outcome, plan: Plan, used: Usage, priced: Priced | None) -> None:
    """The request's ending on its server span: who answered, what it used and cost."""
    span = tracing.server_span()
    if span is None or not span.is_recording():
        return  # no span of this request (a background job's accounting, say)
    values: dict[str, tracing.AttributeValue] = {
        "tiergate.request_id": outcome.rid,
        "tiergate.route": outcome.route,
        "tiergate.tier": outcome.tier,
        "tiergate.backend": outcome.backend,
        "tiergate.cache": outcome.cache,
    }
    trace = outcome.trace
    if len(trace.attempts) > 1:  # one attempt is a first try: no fallback, no retry
        if trace.fallbacks:
            values["tiergate.fallbacks"] = trace.fallbacks
        if trace.retries:
            values["tiergate.retries"] = trace.retries
    if plan.score is not None:
        values["tiergate.complexity"] = plan.score.value
    if outcome.canary_arm is not None:
        values["tiergate.canary_arm"] = outcome.canary_arm
    if outcome.model != "-":
        values["gen_ai.response.model"] = outcome.model
    _usage(values, used)
    if used.estimated:
        values["tiergate.usage_estimated"] = True
    if priced is not None:
        if priced.cost is not None:
            values["tiergate.cost_usd"] = float(priced.cost)
        if priced.baseline is not None:
            values["tiergate.baseline_cost_usd"] = float(priced.baseline)
    span.set_attributes(values)
    if outcome.error is not None:
        tracing.failed(span, outcome.error)


def content(chat: ChatRequest, answer: Completion) -> None:
    """The prompt and the answer on the request's span, in the conventions' message shape (only
    when ``TIERGATE_TRACE_CONTENT`` asks for it)."""
    span = tracing.server_span()
    if span is None:
        return
    messages = [
        {"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in chat.messages
    ]
    output = [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": answer.text}],
            "finish_reason": answer.finish_reason,
        }
    ]
    span.set_attribute("gen_ai.input.messages", orjson.dumps(messages).decode())
    span.set_attribute("gen_ai.output.messages", orjson.dumps(output).decode())

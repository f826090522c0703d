"""One request's use of the caches: whether its answer may come from (and go to) the response
cache, and which replica of its tier holds the longest warm prefix of its prompt."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from adapters.base import ChatRequest, Completion
from gateway import tracing
from gateway.cache.affinity import leading_group, with_affinity
from gateway.cache.keys import deterministic, prefix_hashes, response_key
from gateway.cache.service import CachedAnswer, CacheService
from gateway.policy import Decision, Policy


@dataclass(slots=True)
class RequestCache:
    service: CacheService
    policy: Policy
    key: str | None = None  # the response-cache key, when this request may use the cache
    hit: CachedAnswer | None = None  # the cached answer, when there is one
    hashes: list[str] = field(default_factory=list)  # prompt prefix hashes (multi-replica tier)
    warm: int = 0  # warm prefix tokens at the replica put first

    def label(self, cached_tokens: int = 0) -> str:
        """The ``x-tiergate-cache`` value of a request that went to a backend. A backend's own
        prefix reuse counts from one block up (chat templates make every prompt share a few
        tokens, which is not worth a mention)."""
        block = self.policy.cache.prefixes.block_tokens
        tokens = max(self.warm, cached_tokens if cached_tokens >= block else 0)
        if tokens:
            return f"prefix:{tokens}"
        return "miss" if self.key is not None else "off"

    def keep(self, completion: Completion, tier: str, backend: str, cost: Decimal | None) -> None:
        """Store an answer for the next identical request, and note where its prefix is warm."""
        if self.key is not None and completion.finish_reason in ("stop", "length"):
            answer = CachedAnswer(
                text=completion.text,
                finish_reason=completion.finish_reason,
                usage=completion.usage,
                model=completion.model,
                tier=tier,
                backend=backend,
                cost_usd=cost,
                stop_sequence=completion.stop_sequence,
                thinking=completion.thinking,
            )
            self.service.remember(self.key, answer, self.policy.cache.responses.ttl_s)
        self.service.served(self.hashes, backend, self.policy.cache.prefixes.ttl_s)


def scope_of(scope: str, key_id: str, team: str | None) -> str | None:
    """Who shares a cached answer: a team's keys (a key without a team is a scope of its own),
    one key, or everyone (``None``)."""
    if scope == "shared":
        return None
    if scope == "team" and team is not None:
        return f"team:{team}"
    return f"key:{key_id}"


def cacheable(request: ChatRequest) -> bool:
    """Whether a cached answer (text only) can stand for this request's: not when tools may
    be called or have been, nor when token logprobs or several choices are asked for."""
    if request.tools or request.logprobs or request.n > 1:
        return False
    return not any(m.tool_calls or m.role == "tool" for m in request.messages)


def answer_shaping(request: ChatRequest) -> dict[str, Any]:
    """Request fields beyond messages and sampling that change the answer, for the key."""
    extra: dict[str, Any] = {}
    fmt = request.response_format
    if fmt is not None:
        extra["response_format"] = {"type": fmt.type, "schema": dict(fmt.schema or {})}
    images = [
        [index, [[part.url, part.detail] for part in message.images]]
        for index, message in enumerate(request.messages)
        if message.images
    ]
    if images:
        extra["images"] = images
    return extra


async def prepare(
    service: CacheService,
    policy: Policy,
    decision: Decision,
    request: ChatRequest,
    *,
    key_id: str,
    team: str | None = None,
    in_flight: Callable[[str], int],
    usable: Callable[[str], bool],
) -> tuple[RequestCache, Decision]:
    """The request's cache plan (with its cached answer, if any), and its decision with the
    chosen tier's replicas ordered by warm prefix and load."""
    cache = RequestCache(service, policy)
    responses = policy.cache.responses
    route = policy.routes.get(decision.route)
    route_allows = route.cache if route is not None else True
    if (
        responses.enabled
        and route_allows
        and cacheable(request)
        and (deterministic(request) or not responses.deterministic_only)
    ):
        cache.key = response_key(
            decision.route,
            request,
            extra=answer_shaping(request),
            key_id=scope_of(responses.scope, key_id, team),
        )
        with tracing.step("tiergate.cache") as span:  # a span only when there is a lookup
            cache.hit = await service.lookup(cache.key)
            if span is not None:
                span.set_attribute("tiergate.cache", "miss" if cache.hit is None else "hit")
        if cache.hit is not None:
            return cache, decision  # answered from the cache: no replica to choose
    prefixes = policy.cache.prefixes
    if not prefixes.enabled:
        return cache, decision
    replicas = [c.backend for c in leading_group(decision) if usable(c.backend)]
    if len(replicas) < 2:
        return cache, decision
    cache.hashes = prefix_hashes(
        request.messages,
        block_tokens=prefixes.block_tokens,
        scope=scope_of(responses.scope, key_id, team),
    )
    with tracing.step("tiergate.cache.prefixes") as span:
        warm: Mapping[str, int] = await service.warm_tokens(
            cache.hashes, replicas, block_tokens=prefixes.block_tokens, ttl_s=prefixes.ttl_s
        )
        if span is not None:
            span.set_attribute("tiergate.cache.warm_tokens", max(warm.values(), default=0))
    loads = {name: in_flight(name) for name in replicas}
    decision, cache.warm = with_affinity(decision, warm, loads, prefixes.load_margin)
    service.routed(warm=cache.warm > 0)
    return cache, decision

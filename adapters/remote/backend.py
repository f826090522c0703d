"""The remote tier: a hosted chat API (OpenAI, Anthropic, Gemini, ...) through litellm.

litellm is imported on first use, never at module import (it takes seconds), and only after
``prepare_offline_env()`` so it reads its bundled price map instead of fetching one. The key is
read at call time from the environment variable the policy *names*; its value never reaches a
message, a log line or a repr. litellm's own retries are switched off: the gateway's router
retries and falls back itself, and two layers of retries multiply.

The server contract calls ``litellm.acompletion`` (the blocking ``complete()`` is
``acomplete()`` on a loop of its own, as for every adapter); the pure mapping is in
``adapters.remote.wire``, the error mapping in ``adapters.remote.errors`` and the price map in
``adapters.remote.pricing_map``; this module only does the I/O.

Prompt caching: cached prompt tokens the provider reports become ``Usage.cached_tokens`` (priced
at the cache-read rate by the gateway). With ``prompt_cache_min_tokens`` set, long system
messages to Claude models are marked for Anthropic prompt caching. Tokens written to that cache
are ``Usage.cache_write_tokens`` (the teaching ``complete()`` has them in its metadata as
``cache_write_tokens``), and the server path logs them at debug level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Any

from adapters.base import BackendInfo, BlockingComplete, Health
from adapters.capabilities import REMOTE as REMOTE_DEFAULTS
from adapters.capabilities import Capabilities, from_litellm_info
from adapters.chat import (
    ChatRequest,
    Chunk,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Timings,
    Usage,
    normalise_finish_reason,
)
from adapters.config import RemoteConfig
from adapters.errors import BackendBadResponse, BackendError, BackendUnavailable, translated
from adapters.remote.errors import as_backend_error, secrets_in_environment
from adapters.remote.loader import load_litellm, loaded_litellm
from adapters.remote.pricing_map import ModelPrice, lookup_price
from adapters.remote.wire import (
    TOP_K_PROVIDERS,
    build_payload,
    parse_cache_writes,
    parse_chunk,
    parse_chunk_thinking,
    parse_chunk_tool_calls,
    parse_embedding_vectors,
    parse_logprobs,
    parse_response,
    parse_response_thinking,
    parse_response_tool_calls,
    parse_usage,
    response_headers,
    server_ms,
    takes_cache_control,
    takes_thinking_blocks,
)

log = logging.getLogger("adapters.remote")  # named for the adapter, not the module


class RemoteBackend(BlockingComplete):
    """A hosted chat model through litellm. Implements the teaching and the server contract."""

    def __init__(self, name: str, config: RemoteConfig) -> None:
        self._name = name
        self._config = config
        self._provider: str | None = None
        self._capabilities: Capabilities | None = None
        self._closed = False

    def __repr__(self) -> str:
        key = f", api_key_env={self._config.api_key_env!r}" if self._config.api_key_env else ""
        return f"RemoteBackend(name={self._name!r}, model={self._config.model!r}{key})"

    # --- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> BackendInfo:
        extra: dict[str, Any] = {"type": "remote", "timeout_s": self._config.timeout_s}
        if self._config.api_key_env is not None:
            extra["api_key_env"] = self._config.api_key_env
        if self._config.api_base is not None:
            extra["api_base"] = self._config.api_base
        if self._config.prompt_cache_min_tokens is not None:
            extra["prompt_cache_min_tokens"] = self._config.prompt_cache_min_tokens
        if self._provider is not None:
            extra["provider"] = self._provider
        return BackendInfo(name=self._name, model_id=self.model_id, extra=extra)

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def price(self) -> ModelPrice:
        """List prices and context window from litellm's bundled map (imports litellm)."""
        lib = load_litellm()
        return lookup_price(lib, self._config.model, self._provider_or_none(lib))

    @property
    def context_window(self) -> int | None:
        """The model's input window from litellm's map, once litellm is loaded (``prewarm``
        loads it off the event loop); ``None`` before, so the router asking on the request path
        never triggers the multi-second import."""
        if loaded_litellm() is None:
            return None
        return self.price.context_window

    @property
    def capabilities(self) -> Capabilities:
        """From litellm's model map once litellm is loaded (``prewarm`` loads it); before, the
        defaults for a hosted chat model, so the request path never imports litellm."""
        lib = loaded_litellm()
        if lib is None:
            return REMOTE_DEFAULTS
        if self._capabilities is None:
            try:
                info = lib.get_model_info(
                    model=self._config.model, custom_llm_provider=self._provider
                )
            except Exception:  # litellm raises a bare Exception for "not mapped yet"
                info = None
            self._capabilities = from_litellm_info(info, provider=self._provider)
        return self._capabilities

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        lib = await self._lib()
        kwargs = self._call(lib, request, stream=False)
        started = time.perf_counter()
        with translated(self._error):
            response = await lib.acompletion(**kwargs)
            return self._completion(response, started)

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        lib = await self._lib()
        kwargs = self._call(lib, request, stream=True)
        started = time.perf_counter()
        with translated(self._error):
            stream = await lib.acompletion(**kwargs)
        parts: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        written = 0
        ttft: float | None = None
        try:
            with translated(self._error):
                async for raw in stream:
                    text, raw_finish, raw_usage = parse_chunk(raw)
                    pieces = parse_chunk_tool_calls(raw)
                    thinking = parse_chunk_thinking(raw)
                    finish = raw_finish or finish
                    usage = raw_usage or usage
                    written = parse_cache_writes(getattr(raw, "usage", None)) or written
                    if text or pieces or thinking:
                        if ttft is None:
                            ttft = (time.perf_counter() - started) * 1000.0
                        parts.append(text)
                        parts.extend(piece.thinking for piece in thinking)
                        yield Chunk(
                            delta=text,
                            tool_calls=pieces,
                            thinking=thinking,
                            logprobs=parse_logprobs(raw, streamed=True)
                            if request.logprobs
                            else None,
                        )
        finally:
            await stream.aclose()
        if usage is None:
            if not parts:
                raise BackendBadResponse(
                    self._name,
                    f"the stream from {self.model_id} carried neither text nor usage (litellm "
                    f"could not read it): check that `api_base` points at the provider's API",
                )
            usage = self._estimate_usage(lib, request, "".join(parts))
        self._log_cache_writes(written)
        yield Chunk(
            finish_reason=normalise_finish_reason(finish),
            usage=usage,
            timings=Timings(
                latency_ms=(time.perf_counter() - started) * 1000.0,
                ttft_ms=ttft,
                server_ms=server_ms(response_headers(stream)),
            ),
        )

    async def aembed(self, request: EmbeddingRequest) -> Embeddings:
        """``litellm.aembedding`` for a hosted embedding model (e.g.
        openai/text-embedding-3-small)."""
        lib = await self._lib()
        kwargs = self._call(lib, ChatRequest(messages=()), stream=False)
        call: dict[str, Any] = {
            key: kwargs[key]
            for key in ("model", "api_key", "api_base", "timeout", "num_retries", "max_retries")
            if key in kwargs
        }
        call["input"] = list(request.inputs)
        if request.dimensions is not None:
            call["dimensions"] = request.dimensions
        if request.user is not None:
            call["user"] = request.user
        started = time.perf_counter()
        with translated(self._error):
            response = await lib.aembedding(**call)
            vectors = parse_embedding_vectors(response, len(request.inputs))
        usage = parse_usage(getattr(response, "usage", None)) or Usage(estimated=True)
        return Embeddings(
            vectors=vectors,
            usage=usage,
            timings=Timings(
                latency_ms=(time.perf_counter() - started) * 1000.0,
                server_ms=server_ms(response_headers(response)),
            ),
            backend=self._name,
            model=self.model_id,
        )

    async def prewarm(self) -> None:
        """Import litellm and read its price map now, off the event loop. No request is sent:
        a hosted API has nothing to load, and a probe would cost money."""
        lib = await self._lib()
        self._provider_or_none(lib)

    async def health(self) -> Health:
        """A local check (provider known, key variable set); it sends nothing upstream."""
        if self._closed:
            return Health(ok=False, detail="the backend is closed (the gateway is stopping)")
        lib = await self._lib()
        try:
            provider = self._resolve_provider(lib)
            self._api_key(lib, provider)
        except BackendError as exc:
            return Health(ok=False, detail=exc.message)
        env = self._config.api_key_env
        key = f"key from ${env}" if env else "litellm's default key"
        return Health(
            ok=True, detail=f"{self.model_id} via litellm ({provider}, {key}), not probed"
        )

    async def aclose(self) -> None:
        # litellm's HTTP clients are process-wide and shared by every remote backend, so there
        # is nothing of ours to close: we only refuse further requests.
        self._closed = True

    # --- internals ------------------------------------------------------------------------

    async def _lib(self) -> Any:
        lib = loaded_litellm()
        if lib is not None:
            return lib
        return await asyncio.to_thread(load_litellm)

    def _provider_or_none(self, lib: Any) -> str | None:
        try:
            return self._resolve_provider(lib)
        except BackendUnavailable:
            return None

    def _resolve_provider(self, lib: Any) -> str:
        if self._provider is None:
            try:
                _, provider, _, _ = lib.get_llm_provider(
                    model=self._config.model, api_base=self._config.api_base
                )
            except Exception as exc:
                raise BackendUnavailable(
                    self._name,
                    f"litellm does not know which provider serves {self._config.model!r}: write "
                    f"`model:` as provider/model, e.g. openai/gpt-4o-mini or "
                    f"anthropic/claude-haiku-4-5",
                ) from exc
            self._provider = str(provider)
        return self._provider

    def _api_key(self, lib: Any, provider: str) -> str | None:
        """The key from the named variable; ``None`` lets litellm read its own default."""
        env = self._config.api_key_env
        if env is not None:
            value = os.environ.get(env, "").strip()
            if not value:
                raise BackendUnavailable(
                    self._name,
                    f"environment variable {env} is not set or empty: export {env} with the "
                    f"{provider} API key before starting the gateway, or fix `api_key_env`",
                )
            return value
        if self._config.api_base is None:
            # Only plain API-key providers: others may use cloud credentials litellm finds.
            found = lib.validate_environment(model=self._config.model)
            missing = [str(k) for k in found.get("missing_keys") or ()]
            if (
                missing
                and not found.get("keys_in_environment")
                and all(k.endswith("_API_KEY") for k in missing)
            ):
                names = " or ".join(missing)
                raise BackendUnavailable(
                    self._name,
                    f"no {provider} API key: export {names} (litellm's default), or set "
                    f"`api_key_env` of this backend to the variable that holds it",
                )
        return None

    def _call(self, lib: Any, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """litellm's keyword arguments for ``request``."""
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        provider = self._resolve_provider(lib)
        key = self._api_key(lib, provider)
        cache_min = self._config.prompt_cache_min_tokens
        kwargs = build_payload(
            self._config.model,
            request,
            stream=stream,
            top_k_supported=provider in TOP_K_PROVIDERS,
            cache_system_min_tokens=(
                cache_min if takes_cache_control(provider, self._config.model) else None
            ),
            thinking_blocks=takes_thinking_blocks(provider, self._config.model),
        )
        kwargs.update(
            num_retries=0,
            max_retries=0,
            timeout=self._config.timeout_s,
            drop_params=True,  # e.g. seed for Anthropic: a hint we may lose, not a reason to fail
        )
        if self._config.api_base is not None:
            kwargs["api_base"] = self._config.api_base
        if key is not None:
            kwargs["api_key"] = key
        if request.trace_headers:
            kwargs["extra_headers"] = dict(request.trace_headers)  # the attempt's trace context
        return kwargs

    def _error(self, exc: Exception) -> BackendError:
        lib = load_litellm()  # loaded already: only calls through litellm fail this way
        return as_backend_error(
            exc,
            backend=self._name,
            config=self._config,
            litellm=lib,
            context_window=self._context_window_or_none(lib),
            secrets=secrets_in_environment(self._config.api_key_env),
        )

    def _context_window_or_none(self, lib: Any) -> int | None:
        return lookup_price(lib, self._config.model, self._provider).context_window

    def _completion(self, response: Any, started: float) -> Completion:
        latency = (time.perf_counter() - started) * 1000.0
        text, finish, usage = parse_response(response)  # MalformedAnswer: see as_backend_error
        tool_calls = parse_response_tool_calls(response)
        self._log_cache_writes(parse_cache_writes(getattr(response, "usage", None)))
        return Completion(
            text=text,
            finish_reason=normalise_finish_reason(finish),
            usage=usage if usage is not None else Usage(estimated=True),
            timings=Timings(
                latency_ms=latency, ttft_ms=None, server_ms=server_ms(response_headers(response))
            ),
            backend=self._name,
            model=self.model_id,
            tool_calls=tool_calls,
            logprobs=parse_logprobs(response, streamed=False),
            thinking=parse_response_thinking(response),
        )

    def _log_cache_writes(self, written: int) -> None:
        # The server path's trace of a cache write (the ledger prices reads, not writes).
        if written:
            log.debug(
                "remote_cache_written backend=%s model=%s tokens=%d",
                self._name,
                self.model_id,
                written,
            )

    def _estimate_usage(self, lib: Any, request: ChatRequest, text: str) -> Usage:
        """Count tokens ourselves when a stream reported none (tiktoken, offline encodings)."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            prompt = int(lib.token_counter(model=self._config.model, messages=messages))
            completion = int(lib.token_counter(model=self._config.model, text=text))
        except Exception:  # a tokenizer litellm cannot load offline: no estimate, not an error
            prompt, completion = 0, 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)

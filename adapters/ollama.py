"""A model served by Ollama, through its native API and the official ``ollama`` client.

``/api/chat`` answers in one JSON object or, streamed, as NDJSON lines whose last one
(``"done": true``) carries the server's own counts and timings: ``prompt_eval_count``,
``eval_count``, ``total_duration`` and ``load_duration`` (the part spent loading the model, so
a cold start is not mistaken for a slow backend). The mapping to and from our types lives in
``adapters.ollama_wire``; this module only does the I/O, with ``ollama.AsyncClient`` for the
gateway and ``ollama.Client`` for the blocking teaching ``complete()``.

``timeout_s`` bounds every wait for the server (connecting, each read) and a whole stream, so
a streamed and a non-streamed request get the same limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx
import ollama

from adapters.base import (
    BackendInfo,
    ChatRequest,
    Chunk,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Health,
    InferenceResult,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
    prompt_request,
    to_inference_result,
)
from adapters.capabilities import Capabilities, defaults_for
from adapters.config import OllamaConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from adapters.ollama_wire import (
    WIRE_ERRORS,
    ChatCall,
    UnsupportedInput,
    build_call,
    build_options,
    build_prewarm_call,
    capabilities_from_show,
    content_of,
    estimate_tokens,
    listed,
    ns_to_ms,
    parse_response,
    tool_calls_of,
    translate_error,
)

log = logging.getLogger(__name__)

# A local server accepts a connection at once; do not wait the whole timeout_s to learn it is down.
CONNECT_TIMEOUT_S = 10.0
# The chat endpoint, posted through the client's own request method (see ChatCall.body).
CHAT_PATH = "/api/chat"
# A health probe is a quick listing; it must not hang a readiness check for minutes.
HEALTH_TIMEOUT_S = 5.0


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class OllamaBackend:
    """A model on an Ollama server. Implements the teaching and the server contract."""

    def __init__(self, name: str, config: OllamaConfig) -> None:
        self._name = name
        self._config = config
        self._timeout = httpx.Timeout(
            config.timeout_s, connect=min(config.timeout_s, CONNECT_TIMEOUT_S)
        )
        self._async: ollama.AsyncClient | None = None
        self._sync: ollama.Client | None = None
        self._prewarm_ms: float | None = None
        self._detected: Capabilities | None = None
        self._closed = False

    # --- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> BackendInfo:
        extra: dict[str, Any] = {
            "type": "ollama",
            "base_url": self._config.base_url,
            "keep_alive": self._config.keep_alive,
            "num_ctx": self._config.num_ctx,
        }
        if self._prewarm_ms is not None:
            extra["prewarm_ms"] = self._prewarm_ms
        return BackendInfo(name=self._name, model_id=self.model_id, extra=extra)

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def context_window(self) -> int | None:
        """``num_ctx`` when configured; otherwise Ollama picks one we are not told about."""
        return self._config.num_ctx

    @property
    def capabilities(self) -> Capabilities:
        """What ``/api/show`` said at prewarm, else the defaults for an Ollama backend."""
        return self._detected or defaults_for(self._config)

    # --- teaching contract ----------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> InferenceResult:
        request = prompt_request(
            prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
        )
        call = self._build(request)
        started = time.perf_counter()
        try:
            response = self._sync_client()._request(
                ollama.ChatResponse, "POST", CHAT_PATH, json=call.body(stream=False)
            )
        except WIRE_ERRORS as exc:
            raise self._error(exc) from exc
        return to_inference_result(prompt, self._whole(response, request, started))

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        call = self._build(request)
        started = time.perf_counter()
        response = await self._chat(call)
        return self._whole(response, request, started)

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        call = self._build(request)
        client = self._async_client()
        started = time.perf_counter()
        deadline = started + self._config.timeout_s
        parts: list[str] = []
        calls: list[ToolCall] = []
        ttft: float | None = None
        try:
            responses = cast(
                AsyncIterator[ollama.ChatResponse],
                await client._request(
                    ollama.ChatResponse, "POST", CHAT_PATH, json=call.body(stream=True), stream=True
                ),
            )
        except WIRE_ERRORS as exc:
            raise self._error(exc) from exc
        try:
            while True:
                try:
                    response = await anext(responses)
                except StopAsyncIteration:
                    raise BackendBadResponse(
                        self._name,
                        f"Ollama at {self._config.base_url} ended the stream without its final "
                        f'"done" line; the server or a proxy in between cut it short: check '
                        f"the Ollama server log",
                    ) from None
                except WIRE_ERRORS as exc:
                    raise self._error(exc) from exc
                text = content_of(response)
                # Ollama sends each tool call whole, in one line: one delta per call.
                new_calls = tool_calls_of(response)
                pieces = tuple(
                    ToolCallDelta(index=len(calls) + i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(new_calls)
                )
                calls.extend(new_calls)
                if text or pieces:
                    if ttft is None:
                        ttft = _ms_since(started)
                    parts.append(text)
                if response.done:
                    final = parse_response(
                        response,
                        request,
                        text="".join(parts),
                        backend=self._name,
                        model=self.model_id,
                        latency_ms=_ms_since(started),
                        ttft_ms=ttft,
                        tool_calls=tuple(calls),
                    )
                    yield Chunk(
                        delta=text,
                        finish_reason=final.finish_reason,
                        usage=final.usage,
                        timings=final.timings,
                        tool_calls=pieces,
                    )
                    return
                if text or pieces:
                    yield Chunk(delta=text, tool_calls=pieces)
                if time.perf_counter() > deadline:
                    raise BackendTimeout(
                        self._name,
                        f"the stream from Ollama at {self._config.base_url} ran past "
                        f"timeout_s={self._config.timeout_s}; lower max_tokens or raise "
                        f"`timeout_s` of this backend",
                    )
        finally:
            # Closing the client's generator closes the HTTP response, which stops generation.
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aembed(self, request: EmbeddingRequest) -> Embeddings:
        """``POST /api/embed`` (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-
        embeddings) for an embedding model (nomic-embed-text, all-minilm, ...)."""
        client = self._async_client()
        started = time.perf_counter()
        try:
            response = await client.embed(
                model=self.model_id,
                input=list(request.inputs),
                keep_alive=self._config.keep_alive,
                options=build_options(None, self._config.num_ctx),
                dimensions=request.dimensions,
            )
        except WIRE_ERRORS as exc:
            raise self._error(exc) from exc
        vectors = tuple(tuple(float(v) for v in vector) for vector in response.embeddings or [])
        if len(vectors) != len(request.inputs):
            raise BackendBadResponse(
                self._name,
                f"Ollama at {self._config.base_url} sent {len(vectors)} embeddings for "
                f"{len(request.inputs)} inputs; check that {self.model_id!r} is an embedding model",
            )
        counted = response.prompt_eval_count
        tokens = (
            counted
            if counted is not None
            else sum(estimate_tokens(text) for text in request.inputs)
        )
        return Embeddings(
            vectors=vectors,
            usage=Usage(prompt_tokens=tokens, estimated=counted is None),
            timings=Timings(
                latency_ms=_ms_since(started),
                server_ms=ns_to_ms(response.total_duration),
                load_ms=ns_to_ms(response.load_duration),
            ),
            backend=self._name,
            model=self.model_id,
        )

    async def prewarm(self) -> None:
        """Load the model into Ollama's memory now, with this backend's ``num_ctx`` and
        ``keep_alive``, so the first request does not pay for it. An embedding-only model
        (``capabilities: {chat: false}``) cannot chat: it is only asked what it can do."""
        declared = self._config.capabilities
        if declared is not None and declared.chat is False:
            await self._detect_capabilities()
            return
        started = time.perf_counter()
        response = await self._chat(build_prewarm_call(self._config))
        self._prewarm_ms = _ms_since(started)
        await self._detect_capabilities()
        log.info(
            "ollama_prewarmed backend=%s model=%s wall_ms=%.0f server_load_ms=%s",
            self._name,
            self.model_id,
            self._prewarm_ms,
            ns_to_ms(response.load_duration),
        )

    async def _detect_capabilities(self) -> None:
        """Read what the model can do from ``/api/show`` (its ``capabilities`` list and its
        trained context length); an older server that says nothing leaves the defaults."""
        try:
            shown = await self._async_client().show(self.model_id)
        except WIRE_ERRORS as exc:
            log.info("ollama_show_failed backend=%s reason=%s", self._name, exc)
            return
        self._detected = capabilities_from_show(
            shown, defaults_for(self._config), num_ctx=self._config.num_ctx
        )

    async def health(self) -> Health:
        started = time.perf_counter()
        url = self._config.base_url
        limit = min(self._config.timeout_s, HEALTH_TIMEOUT_S)
        try:
            async with asyncio.timeout(limit):
                listing = await self._async_client().list()
        except TimeoutError:
            return Health(
                ok=False,
                detail=f"Ollama at {url} did not list its models within {limit} s; it may be "
                f"overloaded or hung: check it, or restart `ollama serve`",
                latency_ms=_ms_since(started),
            )
        except BackendError as exc:
            return Health(ok=False, detail=exc.message)
        except WIRE_ERRORS as exc:
            return Health(ok=False, detail=self._error(exc).message, latency_ms=_ms_since(started))
        latency = _ms_since(started)
        names = [m.model for m in listing.models if m.model]
        model = self.model_id
        if not listed(model, names):
            available = ", ".join(sorted(names)) or "none"
            return Health(
                ok=False,
                detail=f"Ollama at {url} does not have the model {model!r} (it has: "
                f"{available}): run `ollama pull {model}` on that server, or fix `model` of "
                f"this backend",
                latency_ms=latency,
            )
        return Health(ok=True, detail=f"{model} is available at {url}", latency_ms=latency)

    async def aclose(self) -> None:
        self._closed = True
        # ollama 0.6 leaves both close() methods unannotated.
        if self._async is not None:
            await self._async.close()  # type: ignore[no-untyped-call]
            self._async = None
        if self._sync is not None:
            self._sync.close()  # type: ignore[no-untyped-call]
            self._sync = None

    # --- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")

    def _async_client(self) -> ollama.AsyncClient:
        self._check_open()
        if self._async is None:
            self._async = ollama.AsyncClient(host=self._config.base_url, timeout=self._timeout)
        return self._async

    def _sync_client(self) -> ollama.Client:
        self._check_open()
        if self._sync is None:
            self._sync = ollama.Client(host=self._config.base_url, timeout=self._timeout)
        return self._sync

    def _error(self, exc: BaseException) -> BackendError:
        return translate_error(exc, backend=self._name, config=self._config)

    async def _chat(self, call: ChatCall) -> ollama.ChatResponse:
        """One non-streamed ``/api/chat`` call."""
        client = self._async_client()
        try:
            return cast(
                ollama.ChatResponse,
                await client._request(
                    ollama.ChatResponse, "POST", CHAT_PATH, json=call.body(stream=False)
                ),
            )
        except WIRE_ERRORS as exc:
            raise self._error(exc) from exc

    def _whole(
        self, response: ollama.ChatResponse, request: ChatRequest, started: float
    ) -> Completion:
        # Not streamed, so the first text arrives with the last: no time to first token.
        return parse_response(
            response,
            request,
            text=content_of(response),
            backend=self._name,
            model=self.model_id,
            latency_ms=_ms_since(started),
            ttft_ms=None,
            tool_calls=tool_calls_of(response),
        )

    def _build(self, request: ChatRequest) -> ChatCall:
        try:
            return build_call(request, self._config)
        except UnsupportedInput as exc:
            raise BackendRejected(self._name, str(exc), status_code=400) from exc

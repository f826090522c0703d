"""A model served by Ollama, through its native HTTP API, spoken with httpx.

``/api/chat`` answers in one JSON object or, streamed, as NDJSON lines whose last one
(``"done": true``) carries the server's own counts and timings: ``prompt_eval_count``,
``eval_count``, ``total_duration`` and ``load_duration`` (the part spent loading the model, so
a cold start is not mistaken for a slow backend). A thinking model's reasoning
(``message.thinking``) becomes the answer's unsigned ``thinking`` blocks (``local_thinking``),
unless the request turned thinking off or asked for it omitted. The bodies are built in
``adapters.ollama.wire``, their replies read in ``adapters.ollama.replies`` (and
``adapters.ollama.models`` for ``/api/tags`` and ``/api/show``),
failures in ``adapters.ollama.errors``; this module only does the I/O. The bodies go out exactly
as built: the ``ollama`` client's typed requests drop what its models lack (nested tool-parameter
schemas, for one), and everything the app sent must arrive.

``timeout_s`` bounds every wait for the server (connecting, each read) and a whole stream, so
a streamed and a non-streamed request get the same limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from adapters._blocking import ClientSlot
from adapters.base import BackendInfo, BlockingComplete, Health
from adapters.capabilities import Capabilities, defaults_for
from adapters.chat import (
    ChatRequest,
    Chunk,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from adapters.config import OllamaConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    translated,
)
from adapters.ollama.errors import as_backend_error, error_from
from adapters.ollama.models import capabilities_from_show, listed, model_names, thinks_from_show
from adapters.ollama.replies import (
    ChatLine,
    decode,
    estimate_tokens,
    ns_to_ms,
    parse_embeddings,
    parse_line,
    parse_response,
)
from adapters.ollama.wire import build_call, build_embed_body, build_prewarm_call
from adapters.thinking import ThinkingBlock, local_thinking, shows_local_thinking

log = logging.getLogger("adapters.ollama")  # named for the adapter, not the module

# A local server accepts a connection at once; do not wait the whole timeout_s to learn it is down.
CONNECT_TIMEOUT_S = 10.0
# A health probe is a quick listing; it must not hang a readiness check for minutes.
HEALTH_TIMEOUT_S = 5.0
CHAT_PATH = "/api/chat"
EMBED_PATH = "/api/embed"
SHOW_PATH = "/api/show"
TAGS_PATH = "/api/tags"
# A remote or proxied Ollama takes a bearer key from this variable (as the ollama CLI does).
API_KEY_ENV = "OLLAMA_API_KEY"


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


class OllamaBackend(BlockingComplete):
    """A model on an Ollama server. Implements the teaching and the server contract."""

    def __init__(self, name: str, config: OllamaConfig) -> None:
        self._name = name
        self._config = config
        self._timeout = httpx.Timeout(
            config.timeout_s, connect=min(config.timeout_s, CONNECT_TIMEOUT_S)
        )
        self._clients = ClientSlot(self._open_client, _close_client)
        self._prewarm_ms: float | None = None
        self._detected: Capabilities | None = None
        self._thinks = False  # /api/show lists ``thinking``: requests' thinking becomes ``think``
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

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        with translated(self._error):
            call = build_call(request, self._config, thinks=self._thinks)
            line = parse_line(
                await self._post(CHAT_PATH, call.body(stream=False), request.trace_headers)
            )
        # Not streamed, so the first text arrives with the last: no time to first token.
        return parse_response(
            line,
            request,
            text=line.text,
            backend=self._name,
            model=self.model_id,
            latency_ms=_ms_since(started),
            ttft_ms=None,
            reasoning=line.thinking,
            tool_calls=line.tool_calls,
            thinking=self._thinking(request, line),
        )

    @staticmethod
    def _thinking(request: ChatRequest, line: ChatLine) -> tuple[ThinkingBlock, ...]:
        """The line's reasoning as an unsigned thinking block (or piece), when it is shown."""
        return local_thinking(line.thinking) if shows_local_thinking(request.thinking) else ()

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        deadline = started + self._config.timeout_s
        parts: list[str] = []
        reasoning: list[str] = []  # all of it, shown or not: the estimate counts its tokens
        calls: list[ToolCall] = []
        ttft: float | None = None
        with translated(self._error):
            body = build_call(request, self._config, thinks=self._thinks).body(stream=True)
            # Leaving this block (a consumer closing the stream included) closes the HTTP
            # response, which is how Ollama learns to stop generating.
            async with self._client().stream(
                "POST", CHAT_PATH, json=body, headers=dict(request.trace_headers) or None
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from(response.status_code, response.text)
                lines = response.aiter_lines()
                while True:
                    raw = await anext(lines, None)
                    if raw is None:
                        raise BackendBadResponse(
                            self._name,
                            f"Ollama at {self._config.base_url} ended the stream without its "
                            f'final "done" line; the server or a proxy in between cut it '
                            f"short: check the Ollama server log",
                        )
                    if not raw.strip():
                        continue
                    line = parse_line(decode(raw))
                    # Ollama sends each tool call whole, in one line: one delta per call.
                    pieces = tuple(
                        ToolCallDelta(len(calls) + i, c.id, c.name, c.arguments)
                        for i, c in enumerate(line.tool_calls)
                    )
                    calls.extend(line.tool_calls)
                    # A thinking model's reasoning comes first, in lines of its own.
                    thinking = self._thinking(request, line)
                    if line.text or pieces or line.thinking:
                        if ttft is None:
                            ttft = _ms_since(started)
                        parts.append(line.text)
                        reasoning.append(line.thinking)
                    if line.done:
                        yield self._final_chunk(
                            line, request, parts, reasoning, calls, pieces, started, ttft
                        )
                        return
                    if line.text or pieces or thinking:
                        yield Chunk(delta=line.text, tool_calls=pieces, thinking=thinking)
                    if time.perf_counter() > deadline:
                        raise BackendTimeout(
                            self._name,
                            f"the stream from Ollama at {self._config.base_url} ran past "
                            f"timeout_s={self._config.timeout_s}; lower max_tokens or raise "
                            f"`timeout_s` of this backend",
                        )

    def _final_chunk(
        self,
        line: ChatLine,
        request: ChatRequest,
        parts: list[str],
        reasoning: list[str],
        calls: list[ToolCall],
        pieces: tuple[ToolCallDelta, ...],
        started: float,
        ttft: float | None,
    ) -> Chunk:
        final = parse_response(
            line,
            request,
            text="".join(parts),
            backend=self._name,
            model=self.model_id,
            latency_ms=_ms_since(started),
            ttft_ms=ttft,
            reasoning="".join(reasoning),
            tool_calls=tuple(calls),
        )
        return Chunk(
            delta=line.text,
            finish_reason=final.finish_reason,
            usage=final.usage,
            timings=final.timings,
            tool_calls=pieces,
            thinking=self._thinking(request, line),
        )

    async def aembed(self, request: EmbeddingRequest) -> Embeddings:
        """``POST /api/embed`` (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-
        embeddings) for an embedding model (nomic-embed-text, all-minilm, ...)."""
        started = time.perf_counter()
        with translated(self._error):
            reply = parse_embeddings(
                await self._post(
                    EMBED_PATH, build_embed_body(request, self._config), request.trace_headers
                )
            )
        if len(reply.vectors) != len(request.inputs):
            raise BackendBadResponse(
                self._name,
                f"Ollama at {self._config.base_url} sent {len(reply.vectors)} embeddings for "
                f"{len(request.inputs)} inputs; check that {self.model_id!r} is an embedding model",
            )
        counted = reply.prompt_eval_count
        tokens = (
            counted
            if counted is not None
            else sum(estimate_tokens(text) for text in request.inputs)
        )
        return Embeddings(
            vectors=reply.vectors,
            usage=Usage(prompt_tokens=tokens, estimated=counted is None),
            timings=Timings(
                latency_ms=_ms_since(started),
                server_ms=ns_to_ms(reply.total_duration),
                load_ms=ns_to_ms(reply.load_duration),
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
        with translated(self._error):
            body = build_prewarm_call(self._config).body(stream=False)
            line = parse_line(await self._post(CHAT_PATH, body))
        self._prewarm_ms = _ms_since(started)
        await self._detect_capabilities()
        log.info(
            "ollama_prewarmed backend=%s model=%s wall_ms=%.0f server_load_ms=%s",
            self._name,
            self.model_id,
            self._prewarm_ms,
            ns_to_ms(line.load_duration),
        )

    async def _detect_capabilities(self) -> None:
        """Read what the model can do from ``/api/show`` (its ``capabilities`` list and its
        trained context length); an older server that says nothing leaves the defaults."""
        try:
            with translated(self._error):
                shown = await self._post(SHOW_PATH, {"model": self.model_id})
                detected = capabilities_from_show(
                    shown, defaults_for(self._config), num_ctx=self._config.num_ctx
                )
        except BackendError as exc:
            log.info("ollama_show_failed backend=%s reason=%s", self._name, exc.message)
            return
        self._detected = detected
        self._thinks = thinks_from_show(shown)

    async def health(self) -> Health:
        started = time.perf_counter()
        url = self._config.base_url
        limit = min(self._config.timeout_s, HEALTH_TIMEOUT_S)
        try:
            async with asyncio.timeout(limit):
                with translated(self._error):
                    names = model_names(await self._get(TAGS_PATH))
        except TimeoutError:
            return Health(
                ok=False,
                detail=f"Ollama at {url} did not list its models within {limit} s; it may be "
                f"overloaded or hung: check it, or restart `ollama serve`",
                latency_ms=_ms_since(started),
            )
        except BackendError as exc:
            return Health(ok=False, detail=exc.message, latency_ms=_ms_since(started))
        latency = _ms_since(started)
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
        await self._clients.aclose()

    # --- plumbing ---------------------------------------------------------------------------

    def _open_client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json"}
        key = os.environ.get(API_KEY_ENV)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.AsyncClient(
            base_url=self._config.base_url,
            timeout=self._timeout,
            headers=headers,
            follow_redirects=True,
        )

    def _client(self) -> httpx.AsyncClient:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        return self._clients.get()

    def _error(self, exc: Exception) -> BackendError:
        return as_backend_error(exc, backend=self._name, config=self._config)

    async def _post(
        self, path: str, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
    ) -> object:
        """``POST`` a JSON body (with ``headers``: a request's trace context); the decoded JSON
        reply, or ``OllamaError`` for an error status."""
        return self._read(await self._client().post(path, json=body, headers=dict(headers) or None))

    async def _get(self, path: str) -> object:
        return self._read(await self._client().get(path))

    @staticmethod
    def _read(response: httpx.Response) -> object:
        if response.is_error:
            raise error_from(response.status_code, response.text)
        return decode(response.content)

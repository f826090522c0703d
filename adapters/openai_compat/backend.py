"""Any OpenAI-compatible server: llama.cpp's server, vLLM, LM Studio, MLX's server, Ollama's /v1.

Built on the official ``openai`` SDK's ``AsyncOpenAI`` (the blocking teaching ``complete()`` is
``acomplete()`` on a loop of its own, as for every adapter), with ``max_retries=0``: retries and
fallbacks are the router's job, and an SDK retrying behind its back would blow the router's
deadlines.

The mapping to and from the wire format lives in ``adapters.openai_compat.wire`` (pure
functions: ``build_payload``, ``parse_response``, ``parse_chunk``, ...), the mapping of the SDK's
exceptions onto ours in ``adapters.openai_compat.errors``; this module does the I/O.

What the servers do not all send, and what we do then:

* **Usage in streams.** We ask for it (``stream_options.include_usage``); servers that ignore
  that (llama-cpp-python's) get estimated usage (``Usage.estimated=True``, the rule is in
  ``adapters.openai_compat.wire``). Servers that *reject* ``stream_options`` with a 400/422
  naming it get the stream again without it, and are not asked again.
* **Server time.** llama.cpp's server adds a ``timings`` object, read as ``server_ms`` (see
  ``adapters.openai_compat.wire``). No server in this family reports model load time in a chat
  reply, so ``load_ms`` stays ``None``.
* **Reasoning.** A reasoning model's ``reasoning_content`` (or ``reasoning``) becomes the
  answer's unsigned ``thinking`` blocks (``local_thinking``), whole and streamed, unless the
  request turned thinking off or asked for it omitted (the server is not told: it has no
  standard knob for it).
* **Context window.** No standard endpoint says it (vLLM's ``max_model_len`` and llama.cpp's
  ``/props`` are their own), so ``context_window`` is ``None``.

``ttft_ms`` is measured in streams only: a non-streamed reply brings all its text at once.
``timeout_s`` bounds connecting and each wait for bytes, so a stream that keeps producing
may run longer; the router's deadline bounds the whole request.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

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
    Usage,
    normalise_finish_reason,
)
from adapters.config import OpenAICompatConfig
from adapters.errors import BackendBadResponse, BackendError, BackendUnavailable, translated
from adapters.openai_compat.errors import as_backend_error
from adapters.openai_compat.wire import (
    build_embedding_payload,
    build_payload,
    decode_json,
    estimate_usage,
    matched_stop,
    parse_chunk,
    parse_embeddings,
    parse_model_ids,
    parse_response,
)
from adapters.thinking import local_thinking, shows_local_thinking

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream, RequestOptions


# Local servers ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "not-needed"
HEALTH_TIMEOUT_S = 5.0
STREAM_USAGE: Mapping[str, Any] = {"include_usage": True}
CHAT_PATH = "/chat/completions"
EMBED_PATH = "/embeddings"


# --- the backend ---------------------------------------------------------------------------


class OpenAICompatBackend(BlockingComplete):
    """A model behind an OpenAI-compatible HTTP API. Implements the teaching and server contract."""

    def __init__(self, name: str, config: OpenAICompatConfig) -> None:
        import openai  # ~0.6 s: only when a policy uses this backend type

        self._openai = openai
        self._name = name
        self._config = config
        self._base_url = config.base_url
        env = config.api_key_env
        key = os.environ.get(env) if env else None
        self._key_set = bool(key)
        self._api_key = key or PLACEHOLDER_API_KEY
        self._clients = ClientSlot(self._open_client, _close_client)
        self._stream_usage = True  # cleared when the server rejects stream_options
        self._closed = False

    # --- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self._name,
            model_id=self.model_id,
            extra={"type": "openai_compat", "base_url": self._base_url},
        )

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def context_window(self) -> int | None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        """The OpenAI-compatible defaults: no standard endpoint says more."""
        return defaults_for(self._config)

    def __repr__(self) -> str:
        return f"OpenAICompatBackend(name={self._name!r}, base_url={self._base_url!r})"

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        body = await self._post(
            CHAT_PATH, build_payload(self._config.model, request), request.trace_headers
        )
        with translated(self._error):
            return parse_response(
                decode_json(body),
                request,
                backend=self._name,
                model=self._config.model,
                latency_ms=_since(started),
                shows_thinking=shows_local_thinking(request.thinking),
            )

    async def _post(
        self, path: str, payload: dict[str, Any], headers: tuple[tuple[str, str], ...]
    ) -> bytes:
        """POST ``payload`` through the SDK's client (auth, base URL, timeouts, its error
        types) without its typed layer: we parse the JSON ourselves, so the per-request cost
        stays small. ``headers``: the request's trace context, if any."""
        options: RequestOptions = {"headers": dict(headers)} if headers else {}
        with translated(self._error):
            response = await self._client().post(
                path, body=payload, cast_to=httpx.Response, options=options
            )
        content: bytes = response.content
        return content

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        stream = await self._open_stream(request)
        content_chunks = 0
        ttft: float | None = None
        finish: str | None = None
        stop_reason: object = None
        usage: Usage | None = None
        server_ms: float | None = None
        shown = shows_local_thinking(request.thinking)
        with translated(self._error):
            async with stream:
                async for item in stream:
                    event = parse_chunk(item)
                    if event.finish_reason:
                        finish, stop_reason = event.finish_reason, event.stop_reason
                    usage = event.usage or usage
                    server_ms = event.server_ms if event.server_ms is not None else server_ms
                    if event.delta or event.tool_calls or event.reasoning:
                        if ttft is None:
                            ttft = _since(started)
                        content_chunks += 1  # reasoning chunks are generated tokens too
                        thinking = local_thinking(event.reasoning) if shown else ()
                        if event.delta or event.tool_calls or thinking:
                            yield Chunk(
                                delta=event.delta,
                                tool_calls=event.tool_calls,
                                logprobs=event.logprobs,
                                thinking=thinking,
                            )
        if finish is None:
            raise BackendBadResponse(
                self._name,
                f"the stream from {self._base_url} ended without a finish_reason, so the answer "
                f"may be cut short: the server may have crashed or a proxy closed the "
                f"connection; check the server's logs",
            )
        finish_reason = normalise_finish_reason(finish)
        yield Chunk(
            finish_reason=finish_reason,
            stop_sequence=matched_stop(stop_reason, request) if finish_reason == "stop" else None,
            usage=usage or estimate_usage(request, completion_tokens=content_chunks),
            timings=Timings(
                latency_ms=_since(started),
                ttft_ms=ttft,
                server_ms=server_ms,
            ),
        )

    async def aembed(self, request: EmbeddingRequest) -> Embeddings:
        """``POST /embeddings`` (https://platform.openai.com/docs/api-reference/embeddings)."""
        started = time.perf_counter()
        body = await self._post(
            EMBED_PATH, build_embedding_payload(self._config.model, request), request.trace_headers
        )
        with translated(self._error):
            vectors, usage = parse_embeddings(decode_json(body), request)
        return Embeddings(
            vectors=vectors,
            usage=usage,
            timings=Timings(latency_ms=_since(started)),
            backend=self._name,
            model=self._config.model,
        )

    async def prewarm(self) -> None:
        """Make sure the server is up (lists its models); raises when it is not."""
        await self._model_ids(self._config.timeout_s)

    async def health(self) -> Health:
        started = time.perf_counter()
        try:
            ids = await self._model_ids(min(HEALTH_TIMEOUT_S, self._config.timeout_s))
        except BackendError as exc:
            return Health(ok=False, detail=exc.message, latency_ms=_since(started))
        model = self._config.model
        if model in ids:
            detail = f"{self._base_url} is up and serves {model!r}"
        else:
            listed = ", ".join(repr(i) for i in ids[:5]) or "nothing"
            detail = (
                f"{self._base_url} is up but does not list {model!r} (it lists {listed}); "
                f"some servers (llama.cpp's) answer with whatever model they loaded, others "
                f"refuse unknown names: check `model:` against GET {self._base_url}/models"
            )
        return Health(ok=True, detail=detail, latency_ms=_since(started))

    async def aclose(self) -> None:
        self._closed = True
        await self._clients.aclose()

    # --- plumbing -------------------------------------------------------------------------

    def _open_client(self) -> AsyncOpenAI:
        # max_retries=0: retries and fallbacks are the router's, within its deadline.
        options: dict[str, Any] = {
            "base_url": self._base_url,
            "api_key": self._api_key,
            "timeout": self._config.timeout_s,
            "max_retries": 0,
        }
        if self._config.http_client == "aiohttp":
            # openai[aiohttp]: httpx's async pool collapses under concurrency.
            options["http_client"] = self._openai.DefaultAioHttpClient()
        return self._openai.AsyncOpenAI(**options)

    def _client(self) -> AsyncOpenAI:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        return self._clients.get()

    def _key(self) -> str | None:
        """The API key sent, when one was set (to keep out of messages)."""
        return self._api_key if self._key_set else None

    def _error(self, exc: Exception) -> BackendError:
        return as_backend_error(exc, backend=self._name, config=self._config, api_key=self._key())

    async def _open_stream(self, request: ChatRequest) -> AsyncStream[object]:
        """Start a stream, asking for usage unless this server has refused to be asked. The
        events come back as plain JSON (``cast_to=object``), parsed by ``wire``."""
        client = self._client()
        payload = {**build_payload(self._config.model, request), "stream": True}
        options: RequestOptions = (
            {"headers": dict(request.trace_headers)} if request.trace_headers else {}
        )

        async def create(body: Mapping[str, Any]) -> AsyncStream[object]:
            return await client.post(
                CHAT_PATH,
                body=body,
                cast_to=object,
                options=options,
                stream=True,
                stream_cls=self._openai.AsyncStream[object],
            )

        with translated(self._error):
            if self._stream_usage:
                try:
                    return await create({**payload, "stream_options": dict(STREAM_USAGE)})
                except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as exc:
                    if "stream_options" not in f"{exc.message} {exc.body}":
                        raise
                    self._stream_usage = False  # this server refuses it: stop asking
            return await create(payload)

    async def _model_ids(self, timeout_s: float) -> list[str]:
        client = self._client().with_options(timeout=timeout_s)
        with translated(self._error):
            raw = await client.models.with_raw_response.list()
            return parse_model_ids(decode_json(raw.http_response.content))


async def _close_client(client: AsyncOpenAI) -> None:
    await client.close()


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0

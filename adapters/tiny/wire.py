"""Pure mapping between our chat requests and llama.cpp's generation loop: the messages the
chat template formats, the sampling settings of ``Llama.generate``, and the JSON schema a
grammar is built from. No llama.cpp here."""

from __future__ import annotations

import json
from typing import Any

from adapters._openai_shape import plain
from adapters.chat import ChatRequest, ResponseFormat

# Sampling defaults for fields a request leaves unset: OpenAI's for temperature and top_p,
# llama.cpp's for top_k and min_p (tiny models ramble without them).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05


def template_messages(request: ChatRequest) -> list[dict[str, str]]:
    """The messages as the chat template (Jinja, HF style) reads them."""
    return [{"role": m.role, "content": m.content} for m in request.messages]


def sampling(request: ChatRequest) -> dict[str, Any]:
    """The keyword arguments of ``Llama.generate`` for the request's sampling settings."""
    return {
        "top_k": request.top_k if request.top_k is not None else DEFAULT_TOP_K,
        "top_p": request.top_p if request.top_p is not None else DEFAULT_TOP_P,
        "min_p": DEFAULT_MIN_P,
        "temp": request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE,
        "repeat_penalty": 1.0,
        # llama.cpp applies these over the last 64 tokens (``last_n_tokens_size``).
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
    }


def json_schema_text(fmt: ResponseFormat) -> str:
    """The schema of a ``json_schema`` response format, as the JSON text llama.cpp's grammar
    builder takes."""
    return json.dumps(plain(fmt.schema or {}))

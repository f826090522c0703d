"""A respx-mocked Ollama server behind a ready ``OllamaBackend``, for the cross-adapter contract
test.

``upstream()`` patches httpx (sync and async clients alike) for the duration of the ``async
with`` block, so every call path of the backend reaches the fake: ``acomplete``, ``astream``,
the blocking ``complete``, ``health`` (``GET /api/tags``) and ``prewarm`` (a chat with no
messages). Any request to another URL fails the test (``assert_all_mocked``), so nothing leaves
the machine.

Bodies follow Ollama's documented shapes, https://github.com/ollama/ollama/blob/main/docs/api.md:
"Chat request (No streaming)", "Chat Request (Streaming)", "Load a model" and "List Local
Models". The final streamed line carries ``message`` with empty content, as the server sends it
(``api.ChatResponse.Message`` is not ``omitempty``), although the documented example elides it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import respx

from adapters.config import OllamaConfig
from adapters.ollama.backend import OllamaBackend

BASE_URL = "http://ollama.upstream.test:11434"
MODEL = "llama3.2"
CREATED_AT = "2023-12-12T14:13:43.416799Z"
LOAD_DURATION_NS = 2_154_458  # from the documented non-streamed chat response
REPLY_WORDS = ("The", " fake", " Ollama", " answers", " every", " request", " with", " this",
               " short", " plausible", " sentence", ".")  # fmt: skip


def reply_words(body: dict[str, Any]) -> tuple[list[str], str]:
    """The words to send and the ``done_reason``: one word per token, cut at ``num_predict``
    (negative means unlimited, as in Ollama) or just before a ``stop`` string."""
    options = body.get("options") or {}
    limit = options.get("num_predict")
    stops = [s for s in options.get("stop") or [] if s]
    words: list[str] = []
    text = ""
    for word in REPLY_WORDS:
        if limit is not None and 0 <= limit <= len(words):
            return words, "length"
        hits = [i for i in ((text + word).find(s) for s in stops) if i != -1]
        if hits:
            cut = min(hits) - len(text)
            if cut > 0:
                words.append(word[:cut])
            return words, "stop"
        words.append(word)
        text += word
    return words, "stop"


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages") or [])


def final_fields(body: dict[str, Any], generated: int, done_reason: str) -> dict[str, Any]:
    """What the last (or only) object adds: counts, nanosecond durations, ``done_reason``."""
    prompt = prompt_tokens(body)
    prompt_ns = 9_000_000 * prompt
    eval_ns = 16_000_000 * generated
    return {
        "done_reason": done_reason,
        "done": True,
        "total_duration": LOAD_DURATION_NS + prompt_ns + eval_ns,
        "load_duration": LOAD_DURATION_NS,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": generated,
        "eval_duration": eval_ns,
    }


def chat(request: httpx.Request) -> httpx.Response:
    """``POST /api/chat``: a load for an empty ``messages``, else a plausible answer, streamed
    as NDJSON unless ``"stream": false``."""
    body = json.loads(request.content)
    model = body["model"]
    if not body.get("messages"):
        return httpx.Response(
            200,
            json={
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "load",
                "done": True,
            },
        )
    words, done_reason = reply_words(body)
    final = final_fields(body, len(words), done_reason)
    if body.get("stream") is False:
        message = {"role": "assistant", "content": "".join(words)}
        return httpx.Response(
            200, json={"model": model, "created_at": CREATED_AT, "message": message, **final}
        )
    lines = [
        {
            "model": model,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": word},
            "done": False,
        }
        for word in words
    ]
    lines.append(
        {
            "model": model,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            **final,
        }
    )
    ndjson = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.Response(
        200, content=ndjson.encode(), headers={"content-type": "application/x-ndjson"}
    )


def tags(model: str) -> dict[str, Any]:
    """``GET /api/tags`` listing ``model`` (with its implied ``:latest`` tag) and one other."""
    name = model if ":" in model else f"{model}:latest"
    details = {
        "format": "gguf",
        "family": "llama",
        "families": None,
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }
    return {
        "models": [
            {
                "name": "codellama:13b",
                "model": "codellama:13b",
                "modified_at": "2023-11-04T14:56:49.277302595-07:00",
                "size": 7365960935,
                "digest": "9f438cb9cd581fc025612d27f7c1a6669ff83a8bb0ed86c94fcf4c5440555697",
                "details": {**details, "parameter_size": "13B", "quantization_level": "Q4_0"},
            },
            {
                "name": name,
                "model": name,
                "modified_at": "2023-12-07T09:32:18.757212583-08:00",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": details,
            },
        ]
    }


def show(capabilities: list[str] | None = None) -> dict[str, Any]:
    """``POST /api/show`` for a llama model, as documented ("Show Model Information"), with the
    ``capabilities`` list servers since 0.6.4 add."""
    return {
        "modelfile": '# Modelfile generated by "ollama show"',
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 3212749888,
            "llama.context_length": 131072,
            "llama.embedding_length": 3072,
        },
        "capabilities": capabilities if capabilities is not None else ["completion", "tools"],
    }


def mount(mock: respx.MockRouter, model: str = MODEL) -> None:
    """Route ``/api/chat``, ``/api/tags`` and ``/api/show`` of ``mock`` (which has
    ``base_url`` set) to the fake Ollama."""
    mock.post("/api/chat").mock(side_effect=chat)
    mock.get("/api/tags").mock(return_value=httpx.Response(200, json=tags(model)))
    mock.post("/api/show").mock(return_value=httpx.Response(200, json=show()))


@asynccontextmanager
async def upstream(name: str = "ollama", model: str = MODEL) -> AsyncIterator[OllamaBackend]:
    """A ready ``OllamaBackend`` whose (fake) server answers any chat plausibly."""
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        mount(mock, model)
        backend = OllamaBackend(
            name, OllamaConfig(type="ollama", model=model, base_url=BASE_URL, num_ctx=4096)
        )
        try:
            yield backend
        finally:
            await backend.aclose()

"""A respx-mocked OpenAI Chat Completions API behind a ready ``RemoteBackend``, for the
cross-adapter contract test.

``upstream()`` patches httpx (sync and async clients alike) for the duration of the ``async
with`` block, so every call path of the backend reaches the fake: ``acomplete``, ``astream``,
the blocking ``complete`` (``acomplete`` on a loop of its own). Any request to another URL fails
the test (``assert_all_mocked``), so nothing leaves the machine.

Bodies follow OpenAI's documented shapes:
https://platform.openai.com/docs/api-reference/chat/object (whole answer) and
https://platform.openai.com/docs/api-reference/chat-streaming/streaming (chunks, with the
final usage-only chunk that ``stream_options.include_usage`` asks for).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import respx

from adapters.config import RemoteConfig
from adapters.remote.backend import RemoteBackend
from adapters.remote.loader import load_litellm

URL = "https://api.openai.com/v1/chat/completions"
MODEL = "openai/gpt-4o-mini"
KEY_ENV = "TIERGATE_TEST_REMOTE_UPSTREAM_KEY"
KEY = "sk-contract-upstream-not-a-real-key"
REPLY_WORDS = ("The", " fake", " upstream", " answers", " every", " request", " with", " this",
               " short", " plausible", " sentence", ".")  # fmt: skip


def _reply(body: dict[str, Any]) -> tuple[list[str], str, int]:
    """The words to send (at most max_tokens of them), the finish reason, and prompt tokens."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or len(REPLY_WORDS)
    words = list(REPLY_WORDS[: max(1, int(limit))])
    finish = "stop" if len(words) == len(REPLY_WORDS) else "length"
    prompt = sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages", []))
    return words, finish, prompt


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    }


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    ]  # fmt: skip
    body = {
        "id": "chatcmpl-contract",
        "object": "chat.completion.chunk",
        "created": 1741678200,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_contract",
        "choices": choices,
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


def answer(request: httpx.Request) -> httpx.Response:
    """A plausible answer to any Chat Completions request, streamed or not."""
    body = json.loads(request.content)
    words, finish, prompt = _reply(body)
    headers = {"openai-processing-ms": "42", "x-request-id": "req_contract"}
    if body.get("stream"):
        events = [_chunk({"role": "assistant", "content": ""})]
        events += [_chunk({"content": word}) for word in words]
        events.append(_chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_chunk(None, usage=_usage(prompt, len(words))))
        events.append("data: [DONE]\n\n")
        return httpx.Response(
            200, text="".join(events), headers={**headers, "content-type": "text/event-stream"}
        )
    return httpx.Response(
        200,
        headers=headers,
        json={
            "id": "chatcmpl-contract",
            "object": "chat.completion",
            "created": 1741678200,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt, len(words)),
            "service_tier": "default",
            "system_fingerprint": "fp_contract",
        },
    )


@asynccontextmanager
async def upstream() -> AsyncIterator[RemoteBackend]:
    """A ``RemoteBackend`` for openai/gpt-4o-mini whose API is the fake above."""
    lib = load_litellm()
    saved_flag = lib.disable_aiohttp_transport
    saved_key = os.environ.get(KEY_ENV)
    # litellm's default aiohttp transport bypasses httpx, and so respx.
    lib.disable_aiohttp_transport = True
    os.environ[KEY_ENV] = KEY
    try:
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            router.post(URL).mock(side_effect=answer)
            backend = RemoteBackend(
                "remote", RemoteConfig(type="remote", model=MODEL, api_key_env=KEY_ENV)
            )
            yield backend
    finally:
        lib.disable_aiohttp_transport = saved_flag
        if saved_key is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = saved_key

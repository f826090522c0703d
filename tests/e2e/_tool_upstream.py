"""A tiny real HTTP server speaking OpenAI's Chat Completions format, with tool calling, JSON
mode and image input, for end-to-end tests through a real ``tiergate serve``.

It runs in the test process (a thread), so a test can read ``requests`` to see exactly what the
gateway forwarded. Bodies follow OpenAI's documented shapes:
https://platform.openai.com/docs/api-reference/chat/object (``message.tool_calls``,
``finish_reason: "tool_calls"``) and
https://platform.openai.com/docs/api-reference/chat-streaming/streaming (tool calls streamed as
``delta.tool_calls`` pieces: the first with ``id``, ``type`` and ``function.name``, later ones
with more ``function.arguments``; the usage-only chunk that ``stream_options`` asks for).

What it answers:

* ``tools`` sent and the last message is not a tool result → a call of the first tool with
  arguments ``{"city": "Paris"}``;
* the last message is a tool result → ``"The weather in Paris: <result>"``;
* ``response_format`` JSON → a JSON object;
* anything else → ``PLAIN_REPLY``;
* ``POST /v1/embeddings`` → ``vector(i)`` for the i-th input.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PLAIN_REPLY = "A plain answer from the stub."
JSON_REPLY = {"answer": "yes", "confidence": 0.9}
TOOL_ARGUMENTS = '{"city": "Paris"}'
CALL_ID = "call_stub_0001"


def answer(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]], str]:
    """Content, tool calls and finish reason for a request body."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"The weather in Paris: {last.get('content')}", [], "stop"
    tools = body.get("tools") or []
    if tools and body.get("tool_choice") != "none":
        name = tools[0]["function"]["name"]
        call = {
            "id": CALL_ID,
            "type": "function",
            "function": {"name": name, "arguments": TOOL_ARGUMENTS},
        }
        return None, [call], "tool_calls"
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return json.dumps(JSON_REPLY), [], "stop"
    return PLAIN_REPLY, [], "stop"


def logprobs_of(text: str) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object: one entry per token (here: per piece of text)."""
    return {
        "content": [
            {"token": text, "logprob": -0.25, "bytes": list(text.encode()), "top_logprobs": []}
        ],
        "refusal": None,
    }


def usage() -> dict[str, int]:
    return {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}


def whole(body: dict[str, Any]) -> dict[str, Any]:
    content, calls, finish = answer(body)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model", "stub-model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs_of(content or "") if body.get("logprobs") else None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(),
    }


def chunks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    content, calls, finish = answer(body)
    base = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": body.get("model", "stub-model"),
    }

    def event(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**base, "choices": [choice]}

    yield event({"role": "assistant", "content": "" if content is not None else None})
    if content:
        for start in range(0, len(content), 8):
            piece = content[start : start + 8]
            if body.get("logprobs"):
                choice = {
                    "index": 0,
                    "delta": {"content": piece},
                    "logprobs": logprobs_of(piece),
                    "finish_reason": None,
                }
                yield {**base, "choices": [choice]}
            else:
                yield event({"content": piece})
    for index, call in enumerate(calls):
        function = call["function"]
        yield event(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments = function["arguments"]
        for start in range(0, len(arguments), 5):
            piece = arguments[start : start + 5]
            yield event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield event({}, finish)
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**base, "choices": [], "usage": usage()}


def vector(index: int) -> list[float]:
    return [0.5 * index, 0.25, -1.0]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """https://platform.openai.com/docs/api-reference/embeddings/object"""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": vector(i)} for i in range(len(inputs))]
    tokens = sum(len(str(text).split()) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class StubServer:
    """The server, its address and the bodies it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send_json(self, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}
                self._send_json(models)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                stub.requests.append(body)
                if self.path.endswith("/embeddings"):
                    self._send_json(embeddings(body))
                    return
                if not body.get("stream"):
                    self._send_json(whole(body))
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for item in chunks(body):
                    self.wfile.write(b"data: " + json.dumps(item).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def last(self) -> dict[str, Any]:
        return self.requests[-1]


@contextmanager
def stub_server() -> Iterator[StubServer]:
    stub = StubServer()
    stub._thread.start()
    try:
        yield stub
    finally:
        stub._server.shutdown()
        stub._server.server_close()

"""A tiny real HTTP server speaking Anthropic's Messages API with extended thinking, for
end-to-end tests through a real ``tiergate serve`` (whose litellm cannot be mocked in-process).

It answers with the bodies of Anthropic's extended-thinking documentation (kept in
``tests/http/test_thinking_sdk``): a tool call with its thinking block when ``tools`` are sent
and the last turn holds no ``tool_result``; the answer after the tool's result; the documented
thinking stream when ``stream`` is set. It records every body it receives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.http.test_thinking_sdk import STREAM_EVENTS, TOOL_ANSWER, TOOL_CALL, sse


def answer(body: dict[str, Any]) -> dict[str, Any]:
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    return TOOL_ANSWER if answered else TOOL_CALL


class AnthropicStub:
    """The server, its address and the bodies it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                stub.requests.append(body)
                streamed = bool(body.get("stream"))
                data = sse(STREAM_EVENTS) if streamed else json.dumps(answer(body)).encode()
                self.send_response(200)
                self.send_header(
                    "content-type", "text/event-stream" if streamed else "application/json"
                )
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)


@contextmanager
def anthropic_stub() -> Iterator[AnthropicStub]:
    stub = AnthropicStub()
    stub._thread.start()
    try:
        yield stub
    finally:
        stub._server.shutdown()
        stub._server.server_close()

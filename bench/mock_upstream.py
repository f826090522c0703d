"""A minimal OpenAI-compatible upstream for the gateway-overhead benchmark.

A raw asyncio protocol (uvloop when present) answering canned bodies, so that the upstream's
own cost is as small as possible and the benchmark measures the gateway, not the mock.
``POST /v1/chat/completions`` answers JSON, or SSE when the body asks for ``"stream": true``;
``GET /v1/models`` lists one model; ``POST /v1/traces`` takes OTLP/HTTP spans and answers an
empty ``ExportTraceServiceResponse`` (the ``--tracing`` comparison's collector). HTTP/1.1
keep-alive.

Run: ``python bench/mock_upstream.py PORT [PIECES]``: a stream sends PIECES content chunks
(default 5, "The quick brown fox jumps."; more repeat those words), all in one write.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

MODEL = "mock-model"

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The quick brown fox jumps."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 25, "completion_tokens": 6, "total_tokens": 31},
    },
    separators=(",", ":"),
).encode()


def _chunk(delta: dict[str, str], finish: str | None = None, usage: object = None) -> bytes:
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


WORDS = ("The", " quick", " brown", " fox", " jumps.")


def stream_body(pieces: int = len(WORDS)) -> bytes:
    """An SSE answer of ``pieces`` content chunks (the words, repeated), its end and usage."""
    usage = {"prompt_tokens": 25, "completion_tokens": pieces + 1, "total_tokens": pieces + 26}
    return b"".join(
        [
            _chunk({"role": "assistant", "content": ""}),
            *(_chunk({"content": WORDS[i % len(WORDS)]}) for i in range(pieces)),
            _chunk({}, finish="stop"),
            _chunk({}, usage=usage),
            b"data: [DONE]\n\n",
        ]
    )


_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + body
    )


RESP_JSON = _response(b"200 OK", b"application/json", _COMPLETION)
RESP_SSE = _response(b"200 OK", b"text/event-stream", stream_body())
RESP_MODELS = _response(b"200 OK", b"application/json", _MODELS)
RESP_TRACES = _response(b"200 OK", b"application/x-protobuf", b"")  # an empty message
RESP_404 = _response(b"404 Not Found", b"application/json", b'{"error":{"message":"no"}}')


class Upstream(asyncio.Protocol):
    sse = RESP_SSE  # a streamed answer (``main`` may make it longer)

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            self._answer(head.split(b"\r\n", 1)[0], body)

    def _answer(self, request_line: bytes, body: bytes) -> None:
        if b"/chat/completions" in request_line:
            streaming = b'"stream":true' in body.replace(b" ", b"")
            self.transport.write(self.sse if streaming else RESP_JSON)
        elif b"/models" in request_line:
            self.transport.write(RESP_MODELS)
        elif b"/v1/traces" in request_line:
            self.transport.write(RESP_TRACES)
        else:
            self.transport.write(RESP_404)


async def main(port: int, pieces: int = len(WORDS)) -> None:
    Upstream.sse = _response(b"200 OK", b"text/event-stream", stream_body(pieces))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), *(int(arg) for arg in sys.argv[2:3])))

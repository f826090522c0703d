"""Bad input at the HTTP edge: an OpenAI-style error body naming the field, a 4xx status, never
a 5xx or a traceback, and nothing sent to any backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from tests.http.helpers import fakes, gateway

MAX_TOKENS_LIMIT = 500

POLICY = f"""
version: 1
backends:
  small: {{type: fake, model: small-model}}
  big: {{type: fake, model: big-model}}
tiers:
  - {{name: cheap, max_score: 0.3, backends: [small]}}
  - {{name: strong, backends: [big]}}
routes:
  auto: {{}}
  frugal: {{tiers: [cheap]}}
limits: {{max_tokens: {MAX_TOKENS_LIMIT}}}
"""

HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
# What a message must never contain: signs that an internal error leaked instead of an answer.
LEAKS = ("Traceback", "pydantic", 'File "', "ValidationError", "errors.pydantic.dev", "<class")


@dataclass
class Gateway:
    client: httpx.AsyncClient
    backends: dict[str, FakeBackend]

    def forwarded(self) -> int:
        return sum(len(b.requests) for b in self.backends.values())


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def gw(policy_file: Path) -> AsyncIterator[Gateway]:
    backends = fakes("small", "big")
    async with gateway(policy_file, backends=backends, max_body_bytes=2048) as (client, _):
        yield Gateway(client, backends)


def check_error(
    response: httpx.Response,
    status: int,
    param: str | None,
    type_: str = "invalid_request_error",
    *,
    mentions: str | None = None,
) -> dict[str, Any]:
    """The response is an OpenAI error body with this status, type and param; its message names
    the field (or says ``mentions``) and reads as a sentence, not a stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["param"] == param
    message = error["message"]
    assert isinstance(message, str)
    assert len(message.split()) >= 3, message
    assert "\n" not in message
    for leak in LEAKS:
        assert leak not in message
    needle = mentions if mentions is not None else param
    if needle is not None:
        assert needle in message
    return error


async def post(client: httpx.AsyncClient, path: str, body: object) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(path, content=raw, headers={"content-type": "application/json"})


def chat(**fields: object) -> dict[str, object]:
    return {"messages": HI, **fields}


CHAT_CASES: list[Any] = [
    pytest.param(b"{not json", None, "invalid_json", id="invalid-json"),
    pytest.param(b'{"messages": [', None, "invalid_json", id="truncated-json"),
    pytest.param(b"", None, "invalid_json", id="empty-body"),
    pytest.param(b"[1, 2]", None, "invalid_json", id="json-array"),
    pytest.param(b'"hello"', None, "invalid_json", id="json-string"),
    pytest.param(b"42", None, "invalid_json", id="json-number"),
    pytest.param({"messages": "hi"}, "messages", "list_type", id="messages-a-string"),
    pytest.param({"messages": ["hi"]}, "messages[0]", "model_type", id="message-a-string"),
    pytest.param(chat(temperature="hot"), "temperature", "float_type", id="temperature-hot"),
    pytest.param(chat(max_tokens=1.5), "max_tokens", "int_type", id="max-tokens-fraction"),
    pytest.param(chat(max_tokens="10"), "max_tokens", "int_type", id="max-tokens-string"),
    pytest.param(chat(max_tokens=True), "max_tokens", "int_type", id="max-tokens-bool"),
    pytest.param(chat(stream="yes"), "stream", "bool_type", id="stream-string"),
    pytest.param(chat(model=5), "model", "string_type", id="model-a-number"),
    pytest.param(chat(stop=5), "stop", "string_type", id="stop-a-number"),
    pytest.param({"model": "auto"}, "messages", "missing", id="messages-missing"),
    pytest.param({"messages": []}, "messages", "too_short", id="messages-empty"),
    pytest.param(
        {"messages": [{"role": "user"}]}, "messages[0].content", "missing", id="user-no-content"
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": None}]},
        "messages[0].content",
        "missing",
        id="user-null-content",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        "string_type",
        id="content-a-number",
    ),
    pytest.param(
        {"messages": [{"role": "wizard", "content": "abracadabra"}]},
        "messages[0].role",
        "literal_error",
        id="unknown-role",
    ),
    pytest.param(
        {"messages": [{"role": "system", "content": "be brief"}]},
        "messages",
        "missing_user_message",
        id="no-user-message",
    ),
    pytest.param(chat(max_tokens=0), "max_tokens", "greater_than_equal", id="max-tokens-0"),
    pytest.param(chat(max_tokens=-5), "max_tokens", "greater_than_equal", id="max-tokens-neg"),
    pytest.param(
        chat(max_tokens=MAX_TOKENS_LIMIT + 1), "max_tokens", "out_of_range", id="max-tokens-limit"
    ),
    pytest.param(chat(temperature=3), "temperature", "less_than_equal", id="temperature-3"),
    # Past 64 bits a seed broke the cache key's JSON encoding (a 500, the connection reset).
    pytest.param(chat(seed=2**70), "seed", "less_than_equal", id="seed-past-64-bits"),
    pytest.param(chat(seed=-(2**70)), "seed", "greater_than_equal", id="seed-below-64-bits"),
    pytest.param(chat(n=17), "n", "out_of_range", id="n-above-limit"),
    pytest.param(chat(stop=["a", "b", "c", "d", "e"]), "stop", "too_long", id="five-stops"),
    pytest.param(chat(model=""), "model", "string_too_short", id="model-empty"),
    pytest.param(chat(frobnicate=1), "frobnicate", "extra_forbidden", id="unknown-field"),
    pytest.param(
        chat(
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice="required",
            functions=[{"name": "f"}],
        ),
        "functions",
        "unsupported_feature",
        id="legacy-functions",
    ),
    pytest.param(
        chat(
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function", "function": {"name": "g"}},
        ),
        "tool_choice.function.name",
        None,
        id="tool-choice-unknown-function",
    ),
    pytest.param(chat(tool_choice="required"), "tool_choice", None, id="tool-choice-no-tools"),
    pytest.param(
        chat(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing",
        id="json-schema-without-schema",
    ),
    pytest.param(
        chat(response_format={"type": "xml"}),
        "response_format.type",
        "literal_error",
        id="unknown-response-format",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
                    ],
                }
            ]
        },
        "messages[0].content[1].type",
        "unsupported_content",
        id="audio-part",
    ),
    pytest.param(
        {"messages": [*HI, {"role": "tool", "content": "42"}]},
        "messages[1].tool_call_id",
        "missing",
        id="tool-message-without-call-id",
    ),
    pytest.param(chat(top_logprobs=2), "top_logprobs", None, id="top-logprobs-without-logprobs"),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
        "messages[0].content[0].type",
        "union_tag_invalid",
        id="unknown-part-type",
    ),
    pytest.param(
        chat(
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function"},
        ),
        "tool_choice.function",
        "missing",
        id="tool-choice-without-function",
    ),
    pytest.param(chat(tool_choice=5), "tool_choice", "tool_choice_type", id="tool-choice-number"),
]


@pytest.mark.parametrize(("body", "param", "code"), CHAT_CASES)
async def test_chat_bad_input(gw: Gateway, body: object, param: str | None, code: str) -> None:
    """Each kind of bad chat request is a 400 naming the field, and reaches no backend."""
    error = check_error(await post(gw.client, CHAT, body), 400, param)
    assert error["code"] == code
    assert gw.forwarded() == 0


COMPLETION_CASES: list[Any] = [
    pytest.param(b"{not json", None, "invalid_json", id="invalid-json"),
    pytest.param(b'["a prompt"]', None, "invalid_json", id="json-array"),
    pytest.param({"model": "auto"}, "prompt", "missing", id="prompt-missing"),
    pytest.param({"prompt": 5}, "prompt", "string_type", id="prompt-a-number"),
    pytest.param({"prompt": ""}, "prompt", None, id="prompt-empty"),
    pytest.param({"prompt": ["one", "two"]}, "prompt", None, id="two-prompts"),
    pytest.param({"prompt": "hi", "echo": True}, "echo", "unsupported_feature", id="echo"),
    pytest.param({"prompt": "hi", "suffix": "!"}, "suffix", "unsupported_feature", id="suffix"),
    pytest.param({"prompt": "hi", "best_of": 3}, "best_of", "unsupported_feature", id="best-of"),
    pytest.param({"prompt": "hi", "max_tokens": 0}, "max_tokens", "greater_than_equal", id="mt-0"),
    pytest.param(
        {"prompt": "hi", "max_tokens": MAX_TOKENS_LIMIT + 1},
        "max_tokens",
        "out_of_range",
        id="max-tokens-limit",
    ),
    pytest.param({"prompt": "hi", "max_tokens": "9"}, "max_tokens", "int_type", id="mt-string"),
    pytest.param({"prompt": "hi", "temperature": 3}, "temperature", "less_than_equal", id="t-3"),
    pytest.param({"prompt": "hi", "n": 17}, "n", "out_of_range", id="n-17"),
    pytest.param({"prompt": "hi", "stop": list("abcde")}, "stop", "too_long", id="five-stops"),
    pytest.param({"prompt": "hi", "messages": HI}, "messages", "extra_forbidden", id="messages"),
]


@pytest.mark.parametrize(("body", "param", "code"), COMPLETION_CASES)
async def test_completions_bad_input(
    gw: Gateway, body: object, param: str | None, code: str | None
) -> None:
    """The same bad input on /v1/completions is refused the same way."""
    error = check_error(await post(gw.client, COMPLETIONS, body), 400, param)
    assert error["code"] == code
    assert gw.forwarded() == 0


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key", "extra_headers"])
async def test_client_cannot_choose_the_upstream(gw: Gateway, path: str, field: str) -> None:
    """Fields a client could use to pick an upstream URL, key or header are refused, not
    forwarded: the policy alone decides where requests go."""
    value: object = {"x-target": "evil"} if field == "extra_headers" else "http://127.0.0.1:9"
    body: dict[str, object] = {"messages": HI} if path == CHAT else {"prompt": "hi"}
    error = check_error(await post(gw.client, path, {**body, field: value}), 400, field)
    assert "policy decides" in error["message"]
    assert gw.forwarded() == 0


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_unknown_model_lists_the_valid_names(gw: Gateway, path: str) -> None:
    """An unknown model is a 400 on `model` whose message lists every route and backend."""
    body: dict[str, object] = {"messages": HI} if path == CHAT else {"prompt": "hi"}
    response = await post(gw.client, path, {**body, "model": "gpt-17-ultra"})
    error = check_error(response, 400, "model")
    assert error["code"] == "model_not_found"
    assert "gpt-17-ultra" in error["message"]
    for name in ("auto", "frugal", "small", "big"):
        assert name in error["message"]
    # The request was refused after the policy applied: it carries the request id and hash.
    assert response.headers["x-request-id"]
    assert response.headers["x-tiergate-policy"]
    assert gw.forwarded() == 0


async def test_declared_body_over_the_limit_is_refused_unread(gw: Gateway) -> None:
    """A Content-Length over max_body_bytes gets a 413 before a single body byte is read."""
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(8):
            pulled += 1
            yield b" " * 512

    response = await gw.client.post(
        CHAT, content=body(), headers={"content-length": "4096", "content-type": "application/json"}
    )
    error = check_error(response, 413, None)
    assert error["code"] == "body_too_large"
    assert "2048" in error["message"]
    assert pulled == 0
    assert gw.forwarded() == 0


async def test_chunked_body_over_the_limit_is_cut_off(gw: Gateway) -> None:
    """A body without Content-Length is refused with 413 as soon as it passes the limit, long
    before the client has sent it all."""
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(1000):
            pulled += 1
            yield b"x" * 256
        yield b'"}]}'

    request = gw.client.build_request("POST", CHAT, content=body())
    assert "content-length" not in request.headers
    error = check_error(await gw.client.send(request), 413, None)
    assert error["code"] == "body_too_large"
    # 2048 bytes is 8 chunks of 256: the gateway stopped reading right after the limit.
    assert pulled <= 9
    assert gw.forwarded() == 0


async def test_chunked_body_under_the_limit_is_served(gw: Gateway) -> None:
    """A chunked body within the limit is read whole and answered."""

    async def body() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", '
        yield b'"content": "hello"}]}'

    response = await gw.client.post(CHAT, content=body())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "small answer"


TINY_ONLY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 256}
tiers:
  - {name: tiny, backends: [tiny]}
"""


@pytest.fixture
def tiny_policy(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_ONLY)
    return path


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_prompt_longer_than_every_context_window(tiny_policy: Path, path: str) -> None:
    """A prompt no candidate's context window can hold is a 400 context_length_exceeded that
    says which backend's window was too small, before any backend is asked."""
    long_prompt = " ".join(f"word{i}" for i in range(600))
    body: dict[str, object] = (
        {"messages": [{"role": "user", "content": long_prompt}]}
        if path == CHAT
        else {"prompt": long_prompt}
    )
    async with gateway(tiny_policy) as (client, _):
        response = await post(client, path, body)
    error = check_error(
        response, 400, "messages" if path == CHAT else "prompt", mentions="context window"
    )
    assert error["code"] == "context_length_exceeded"
    assert "the prompt does not fit" in error["message"]
    assert "tiny" in error["message"]
    assert "256" in error["message"]


UNDECLARED = """
version: 1
backends:
  upstream: {type: fake, model: upstream-model%s}
tiers:
  - {name: only, backends: [upstream]}
"""


@pytest.mark.parametrize(
    ("declared", "status"), [("", 400), (", capabilities: {context_window: 32768}", 200)]
)
async def test_a_backend_whose_window_nobody_states_holds_8192_tokens(
    tmp_path: Path, declared: str, status: int
) -> None:
    """A backend that states no context window (an OpenAI-compatible server, a fake) counted as
    unlimited, so a prompt of any size was forwarded; it is taken to hold 8,192 tokens unless
    the policy says more."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(UNDECLARED % declared)
    upstream = FakeBackend.scripted("upstream", "answered")
    prompt = " ".join(f"word{i}" for i in range(9000))  # well over 8,192 tokens
    async with gateway(policy, backends={"upstream": upstream}) as (client, _):
        response = await post(client, CHAT, {"messages": [{"role": "user", "content": prompt}]})
    assert response.status_code == status, response.text
    if status == 400:
        error = check_error(response, 400, "messages", mentions="context window 8192")
        assert error["code"] == "context_length_exceeded"
        assert upstream.requests == []
    else:
        assert len(upstream.requests) == 1


async def test_malformed_backend_reply_is_a_502(policy_file: Path) -> None:
    """When every backend answers garbage the client gets a 502 that says so, with the request
    id and the policy hash."""
    backends = {
        n: FakeBackend.scripted(n, FakeStep(error="bad_response")) for n in ("small", "big")
    }
    async with gateway(policy_file, backends=backends) as (client, _):
        response = await post(client, CHAT, chat())
    error = check_error(response, 502, None, type_="upstream_error")
    assert error["code"] == "bad_backend_response"
    assert "small" in error["message"]
    assert "big" in error["message"]
    assert "bad response" in error["message"]
    assert response.headers["x-request-id"]
    assert response.headers["x-tiergate-policy"]
    assert all(len(b.requests) == 1 for b in backends.values())


async def test_malformed_backend_reply_to_a_stream_is_a_502(policy_file: Path) -> None:
    """A stream that no backend could open is a plain 502 error body, not an SSE stream."""
    backends = {
        n: FakeBackend.scripted(n, FakeStep(error="bad_response")) for n in ("small", "big")
    }
    async with gateway(policy_file, backends=backends) as (client, _):
        response = await post(client, CHAT, chat(stream=True))
    error = check_error(response, 502, None, type_="upstream_error")
    assert error["code"] == "bad_backend_response"


async def test_no_bad_input_turns_into_a_server_error(gw: Gateway) -> None:
    """Odd but well-formed JSON values (null fields, NaN, nested junk) never give a 5xx."""
    bodies: list[bytes] = [
        b'{"messages": null}',
        b'{"messages": [null]}',
        b'{"messages": [{"role": "user", "content": [null]}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": "yes"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10000000000000000000000}',
        b'{"messages": {"role": "user", "content": "hi"}}',
        b"\xff\xfe\x00",
        b"null",
    ]
    for body in bodies:
        for path in (CHAT, COMPLETIONS):
            response = await post(gw.client, path, body)
            assert 400 <= response.status_code < 500, (path, body, response.text)
            check_error(response, response.status_code, response.json()["error"]["param"])
    assert gw.forwarded() == 0


async def test_a_client_leaving_mid_upload_is_an_info_line_not_an_error(
    policy_file: Path,
) -> None:
    """The body stops half-way and the client disconnects: the log says so at info level, with
    no traceback and no `unhandled_error`, and no backend is called."""
    backends = fakes("small", "big")
    messages: list[dict[str, object]] = [
        {"type": "http.request", "body": b'{"messages": [{"role": "us', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gw")],
        "client": ("127.0.0.1", 50000),
        "server": ("gw", 80),
    }
    async with gateway(policy_file, backends=backends) as (_client, app):
        with capture_logs() as logs:
            await app(scope, receive, send)  # type: ignore[arg-type]
    events = {entry["event"]: entry for entry in logs}
    assert "unhandled_error" not in events
    assert events["client_disconnected"]["log_level"] == "info"
    assert sum(len(b.requests) for b in backends.values()) == 0


async def test_an_upstream_refusing_the_gateways_own_key_is_a_502_for_the_operator(
    tmp_path: Path,
) -> None:
    """An upstream's 401 answers the gateway's credentials, not the client's request: a 502
    `upstream_auth_failed` (was a 400 `rejected_by_backend`, as if the client were at fault),
    whose body names the backend but not the setting; the log names it for the operator."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(UNDECLARED % "")
    upstream = FakeBackend.scripted("upstream", FakeStep(error="unauthorized"))
    with capture_logs() as logs:
        async with gateway(policy, backends={"upstream": upstream}) as (client, _):
            response = await post(client, CHAT, {"messages": HI})
    error = check_error(response, 502, None, "upstream_error", mentions="upstream")
    assert error["code"] == "upstream_auth_failed"
    assert "credentials" in error["message"]
    assert "FAKE_API_KEY" not in response.text
    (logged,) = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert logged["backends"] == ["upstream"]
    assert "FAKE_API_KEY" in logged["detail"]


async def test_embedding_dimensions_are_bounded(tmp_path: Path) -> None:
    """Found by the schema fuzzer: ``dimensions`` had no upper bound, and a backend (the shipped
    fake at least) built a vector that long for every input — gigabytes of memory for one
    request. Now a 400 naming the field."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
version: 1
backends:
  vectors: {type: fake, model: embed-model, capabilities: {chat: false, embeddings: true}}
tiers:
  - {name: only, backends: [vectors]}
"""
    )
    async with gateway(policy, ledger=False) as (client, _app):
        huge = await client.post("/v1/embeddings", json={"input": "hi", "dimensions": 10**9})
        fine = await client.post("/v1/embeddings", json={"input": "hi", "dimensions": 256})
    assert huge.status_code == 400
    assert huge.json()["error"]["param"] == "dimensions"
    assert fine.status_code == 200
    assert len(fine.json()["data"][0]["embedding"]) == 256

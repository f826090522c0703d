"""The official ``openai`` Node SDK, unchanged, against a real ``tiergate serve``: chat (whole,
streamed with usage, tools, JSON mode), models, Responses (whole, streamed, the stream helper),
typed errors, the receipt headers, an abort the gateway acts on and the SDK's retries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._tool_upstream import JSON_REPLY, PLAIN_REPLY, vector
from tests.e2e.conftest import API_KEY, Server
from tests.sdk_js.conftest import (
    COOLDOWN_S,
    HELD_MS,
    SLOW_WORDS,
    installed_and_pinned,
    ledger_row,
    passed,
    run_node,
)

pytestmark = pytest.mark.model


def test_the_pinned_version_is_the_one_that_runs() -> None:
    """node_modules holds what package.json pins (a stale install: run make sdk-js)."""
    installed, pinned = installed_and_pinned("openai")
    assert installed == pinned, f"{installed} installed, {pinned} pinned: run make sdk-js"


@pytest.fixture(scope="module")
def results(gateway: Server) -> dict[str, Any]:
    return run_node("openai.mjs", gateway)


def test_chat_completion_with_its_receipt_headers(results: dict[str, Any]) -> None:
    """A plain chat answer from the tiny model; withResponse() shows the x-tiergate-* headers
    and the SDK's _request_id is the gateway's request id."""
    chat = passed(results, "chat")
    headers = chat["headers"]
    assert (headers["x-tiergate-tier"], headers["x-tiergate-backend"]) == ("tiny", "tiny")
    assert headers["x-tiergate-route"] == "auto"
    assert float(headers["x-tiergate-complexity"]) <= 0.25
    assert len(headers["x-tiergate-policy"]) == 12
    assert uuid.UUID(headers["x-request-id"]).version == 7
    assert chat["requestId"] == headers["x-request-id"]
    assert chat["id"].startswith("chatcmpl-")
    assert chat["object"] == "chat.completion"
    assert chat["model"].startswith("SmolLM2")
    assert chat["role"] == "assistant"
    assert chat["content"].strip()
    assert chat["finish"] in ("stop", "length")
    usage = chat["usage"]
    assert usage["prompt_tokens"] > 10
    assert 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_with_for_await_and_include_usage(results: dict[str, Any]) -> None:
    """for await over the stream gives the whole answer's text, then a usage-only chunk."""
    stream = passed(results, "stream")
    assert stream["contentType"].startswith("text/event-stream")
    assert stream["headers"]["x-tiergate-backend"] == "tiny"
    assert stream["text"] == stream["whole"]["text"]
    assert stream["finish"] == stream["whole"]["finish"]
    assert stream["usageChunkChoices"] == 0
    assert stream["usage"]["completion_tokens"] == stream["whole"]["usage"]["completion_tokens"]
    assert stream["usage"]["prompt_tokens"] == stream["whole"]["usage"]["prompt_tokens"]


def test_tool_calls_whole_and_through_the_stream_helper(results: dict[str, Any]) -> None:
    """A tool call comes back in the SDK's shape; the assistant message sent back as the SDK
    returned it and the tool result give the final answer; the stream helper joins the
    streamed arguments into the same call."""
    tools = passed(results, "tools")
    assert tools["finish"] == "tool_calls"
    assert [(c["type"], c["name"], c["arguments"]) for c in tools["calls"]] == [
        ("function", "get_weather", {"city": "Paris"})
    ]
    assert tools["answer"] == "The weather in Paris: 18 degrees and sunny"
    assert tools["streamedFinish"] == "tool_calls"
    assert tools["streamedCalls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


def test_json_mode(results: dict[str, Any]) -> None:
    assert passed(results, "json")["parsed"] == JSON_REPLY


def test_embeddings_base64_by_default_and_float(results: dict[str, Any]) -> None:
    """The Node SDK asks for base64 unless told otherwise and decodes it: the same vectors."""
    embeddings = passed(results, "embeddings")
    assert embeddings["packed"] == embeddings["floats"] == [vector(0), vector(1)]


def test_structured_output_through_parse(results: dict[str, Any]) -> None:
    assert passed(results, "parse")["parsed"] == JSON_REPLY


def test_models_list_and_retrieve(results: dict[str, Any]) -> None:
    """for await over models.list() pages through the routes and backends; retrieve() finds
    one and an unknown id is a NotFoundError."""
    models = passed(results, "models")
    assert models["ids"] == ["auto", "tiny", "agent", "limited", "failing", "slow", "held"]
    assert models["one"] == {"id": "auto", "object": "model"}
    assert (models["missing"]["class"], models["missing"]["status"]) == ("NotFoundError", 404)
    assert uuid.UUID(models["missing"]["requestId"]).version == 7


def test_responses_whole_streamed_and_the_stream_helper(results: dict[str, Any]) -> None:
    responses = passed(results, "responses")
    plain = responses["plain"]
    assert plain["id"].startswith("resp_")
    assert plain["object"] == "response"
    assert plain["status"] in ("completed", "incomplete")
    assert plain["outputText"].strip()
    assert 0 < plain["usage"]["output_tokens"] <= 12
    assert plain["headers"]["x-tiergate-tier"] == "tiny"
    streamed = responses["streamed"]
    assert streamed["kinds"][:2] == ["response.created", "response.in_progress"]
    assert streamed["kinds"][-1] in ("response.completed", "response.incomplete")
    assert streamed["deltas"].strip()
    assert streamed["finalText"] == streamed["deltas"]
    assert streamed["usage"]["output_tokens"] > 0
    helper = responses["helper"]
    assert helper["text"] == PLAIN_REPLY
    assert helper["finalText"] == PLAIN_REPLY
    assert helper["status"] == "completed"


def test_bad_parameters_are_bad_request_errors_naming_the_field(results: dict[str, Any]) -> None:
    bad = passed(results, "badParams")
    for name, field in [
        ("temperature", "temperature"),
        ("messages", "messages"),
        ("role", "messages[0].role"),
        ("responsesStore", "previous_response_id"),
        ("responsesTokens", "max_output_tokens"),
    ]:
        error = bad[name]
        assert (error["class"], error["status"]) == ("BadRequestError", 400), (name, error)
        assert error["error"]["param"] == field, (name, error)
        assert field in error["message"], (name, error)
        assert uuid.UUID(error["requestId"]).version == 7
    unknown = bad["model"]
    assert (unknown["class"], unknown["status"]) == ("BadRequestError", 400)
    assert "gpt-9" in unknown["message"]
    assert "auto, tiny, agent" in unknown["message"]


def test_a_wrong_key_is_an_authentication_error(results: dict[str, Any], gateway: Server) -> None:
    auth = passed(results, "auth")
    for error in (auth["chat"], auth["models"]):
        assert (error["class"], error["status"]) == ("AuthenticationError", 401)
        assert error["error"]["type"] == "authentication_error"
        assert "not-a-key-0000" not in error["message"]
        assert uuid.UUID(error["requestId"]).version == 7  # every answer has its request id
    assert API_KEY not in gateway.log.read_text()


def test_an_abort_stops_the_work_and_leaves_a_ledger_row(
    results: dict[str, Any], gateway: Server, root: Path
) -> None:
    """AbortController.abort() mid-stream: the SDK ends the stream, the gateway stops
    the stream (its 499 row counts only the words sent before) long before it would have
    ended; a whole request aborted while its backend works has its 499 row too."""
    abort = passed(results, "abort")
    assert abort["chunks"] == 3  # the loop ended there: the SDK ends an aborted stream quietly
    assert abort["aborted"]
    assert abort["text"] == "word0 word1"  # the first chunk carries the role
    row = ledger_row(root, gateway, "the aborted stream", id=abort["headers"]["x-request-id"])
    assert (row["status"], row["backend"], row["stream"]) == (499, "slow", 1)
    assert row["completion_tokens"] < SLOW_WORDS / 2
    assert row["latency_ms"] < SLOW_WORDS / 10 * 1000 / 2  # 10 words a second
    assert abort["whole"]["class"] == "APIUserAbortError"
    held = ledger_row(root, gateway, "the aborted whole request", backend="held")
    assert (held["status"], held["stream"]) == (499, 0)
    assert held["latency_ms"] < HELD_MS


def test_retries_on_429_wait_for_retry_after(results: dict[str, Any]) -> None:
    """The 429 carries Retry-After (2 s here): the SDK waits that long, not its own 0.5 s
    back-off, and its retry is answered; without retries it is a RateLimitError."""
    retry = passed(results, "retry429")
    assert retry["content"] == "served once the limit passed"
    assert retry["waitedMs"] >= 2000
    refused = retry["noRetry"]
    assert (refused["class"], refused["status"]) == ("RateLimitError", 429)
    assert refused["retryAfter"] == "2"
    assert refused["error"]["code"] == "backend_rate_limited"


def test_retries_on_503_wait_for_the_breaker(results: dict[str, Any]) -> None:
    """An upstream's 503 (no Retry-After: nobody knows) opens the backend's breaker; the SDK's
    retry finds it open and gets a 503 with Retry-After (the cooldown left), waits that long
    and its next retry, the breaker's probe, is answered."""
    retry = passed(results, "retry503")
    assert retry["content"] == "served after a 503"
    assert retry["waitedMs"] >= COOLDOWN_S * 1000
    failed, skipped = retry["upstream"], retry["skipped"]
    assert (failed["class"], failed["status"]) == ("InternalServerError", 503)
    assert failed["error"]["code"] == "backend_unavailable"
    assert failed["retryAfter"] is None
    assert (skipped["class"], skipped["status"]) == ("InternalServerError", 503)
    assert skipped["error"]["code"] == "no_backend_available"
    assert skipped["retryAfter"] == str(COOLDOWN_S)

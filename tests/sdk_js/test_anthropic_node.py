"""The official ``@anthropic-ai/sdk`` Node SDK, unchanged, against a real ``tiergate serve``:
messages (whole, the .stream() helper with finalMessage(), tool use), countTokens, typed
errors in Anthropic's shape, an abort the gateway acts on and the SDK's retries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server
from tests.sdk_js.conftest import (
    COOLDOWN_S,
    SLOW_WORDS,
    installed_and_pinned,
    ledger_row,
    passed,
    run_node,
)

pytestmark = pytest.mark.model


def test_the_pinned_version_is_the_one_that_runs() -> None:
    """node_modules holds what package.json pins (a stale install: run make sdk-js)."""
    installed, pinned = installed_and_pinned("@anthropic-ai/sdk")
    assert installed == pinned, f"{installed} installed, {pinned} pinned: run make sdk-js"


@pytest.fixture(scope="module")
def results(gateway: Server) -> dict[str, Any]:
    return run_node("anthropic.mjs", gateway)


def test_a_message_with_its_receipt_headers(results: dict[str, Any]) -> None:
    message = passed(results, "message")
    headers = message["headers"]
    assert headers["x-tiergate-tier"] == "tiny"
    assert uuid.UUID(headers["x-request-id"]).version == 7
    # The SDK reads Anthropic's request-id header: withResponse().request_id, _request_id.
    assert message["requestId"] == message["sdkRequestId"] == headers["x-request-id"]
    assert message["id"].startswith("msg_")
    assert (message["type"], message["role"]) == ("message", "assistant")
    assert message["content"][0]["type"] == "text"
    assert message["content"][0]["text"].strip()
    assert message["stopReason"] in ("end_turn", "max_tokens")
    assert message["usage"]["input_tokens"] > 0
    assert 0 < message["usage"]["output_tokens"] <= 12


def test_the_stream_helper_and_final_message(results: dict[str, Any]) -> None:
    """messages.stream(): 'text' events join into finalMessage()'s text, the events come in
    Anthropic's order."""
    stream = passed(results, "stream")
    assert stream["text"].strip()
    assert stream["finalText"] == stream["text"]
    final = stream["final"]
    assert final["content"] == [{"type": "text", "text": stream["text"], "citations": None}] or [
        {k: v for k, v in block.items() if k != "citations"} for block in final["content"]
    ] == [{"type": "text", "text": stream["text"]}]
    assert final["stopReason"] in ("end_turn", "max_tokens")
    assert final["usage"]["output_tokens"] > 0
    kinds = stream["kinds"]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in kinds
    assert stream["headers"]["x-tiergate-tier"] == "tiny"
    assert stream["requestId"] == stream["headers"]["x-request-id"]


def test_tool_use_round_trip(results: dict[str, Any]) -> None:
    tools = passed(results, "tools")
    assert tools["stopReason"] == "tool_use"
    assert tools["calls"] == [{"name": "get_weather", "input": {"city": "Paris"}}]
    assert tools["answerStopReason"] == "end_turn"
    assert tools["answer"][0]["text"] == "The weather in Paris: 18 degrees and sunny"


def test_count_tokens(results: dict[str, Any]) -> None:
    counted = passed(results, "countTokens")
    assert 0 < counted["short"] < counted["longer"]
    assert uuid.UUID(counted["requestId"]).version == 7


def test_models_in_anthropic_s_shape(results: dict[str, Any]) -> None:
    """models.list() pages through the routes and backends with the fields Anthropic's model
    objects have; retrieve() finds one; an unknown id is a NotFoundError."""
    models = passed(results, "models")
    ids = [m["id"] for m in models["models"]]
    assert ids == ["auto", "tiny", "agent", "limited", "failing", "slow", "held"]
    for model in [*models["models"], models["one"]]:
        assert model["type"] == "model"
        assert model["name"] == model["id"]
        assert model["created"] == "1970-01-01T00:00:00Z"
    assert models["one"]["id"] == "auto"
    assert (models["missing"]["class"], models["missing"]["status"]) == ("NotFoundError", 404)


def test_bad_parameters_are_bad_request_errors_naming_the_field(results: dict[str, Any]) -> None:
    bad = passed(results, "badParams")
    for name, field in [
        ("temperature", "temperature"),
        ("maxTokens", "max_tokens"),
        ("streamed", "top_k"),
    ]:
        error = bad[name]
        assert (error["class"], error["status"]) == ("BadRequestError", 400), (name, error)
        assert error["error"]["type"] == "error", (name, error)
        assert error["error"]["error"]["type"] == "invalid_request_error", (name, error)
        assert field in error["message"], (name, error)
        assert uuid.UUID(error["requestId"]).version == 7, (name, error)
    unknown = bad["model"]
    assert (unknown["class"], unknown["status"]) == ("BadRequestError", 400)
    assert "gpt-17-ultra" in unknown["message"]
    assert uuid.UUID(unknown["requestId"]).version == 7


def test_a_wrong_key_is_an_authentication_error(results: dict[str, Any]) -> None:
    auth = passed(results, "auth")
    for error in (auth["create"], auth["count"]):
        assert (error["class"], error["status"]) == ("AuthenticationError", 401)
        assert error["error"]["error"]["type"] == "authentication_error"
        assert "not-a-key-0000" not in error["message"]
        assert uuid.UUID(error["requestId"]).version == 7


def test_an_abort_stops_the_stream_and_leaves_a_ledger_row(
    results: dict[str, Any], gateway: Server, root: Path
) -> None:
    abort = passed(results, "abort")
    assert abort["deltas"] == 3
    assert abort["error"]["class"] == "APIUserAbortError"
    row = ledger_row(root, gateway, "the aborted stream", id=abort["headers"]["x-request-id"])
    assert (row["status"], row["backend"], row["stream"]) == (499, "slow", 1)
    assert row["completion_tokens"] < SLOW_WORDS / 2
    assert row["latency_ms"] < SLOW_WORDS / 10 * 1000 / 2  # 10 words a second


def test_retries_on_429_wait_for_retry_after(results: dict[str, Any]) -> None:
    retry = passed(results, "retry429")
    assert retry["content"][0]["text"] == "served once the limit passed"
    assert retry["waitedMs"] >= 2000
    refused = retry["noRetry"]
    assert (refused["class"], refused["status"]) == ("RateLimitError", 429)
    assert refused["retryAfter"] == "2"
    assert refused["error"]["error"]["type"] == "rate_limit_error"


def test_retries_on_503_wait_for_the_breaker(results: dict[str, Any]) -> None:
    """As with the openai SDK: the 503 of an open breaker says when to come back, the SDK
    waits that long and its retry is answered."""
    retry = passed(results, "retry503")
    assert retry["content"][0]["text"] == "served after a 503"
    assert retry["waitedMs"] >= COOLDOWN_S * 1000
    failed, skipped = retry["upstream"], retry["skipped"]
    assert (failed["class"], failed["status"]) == ("ServiceUnavailableError", 503)
    assert failed["retryAfter"] is None
    assert (skipped["class"], skipped["status"]) == ("ServiceUnavailableError", 503)
    assert skipped["error"]["type"] == "error"
    assert skipped["retryAfter"] == str(COOLDOWN_S)

"""Every response carries a request id, refusals made before the pipeline included, and under
``/v1/messages`` also as ``request-id``, the header Anthropic's SDKs read (the Node SDK's
``_request_id`` and ``error.requestID`` were null before: tests/sdk_js)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.http.helpers import TWO_TIERS, fakes, gateway

KEY = "k-ids-1111"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
COUNT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {**COUNT, "max_tokens": 8}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(TWO_TIERS)
    return path


def uuid7(response: httpx.Response) -> str:
    value = response.headers["x-request-id"]
    assert uuid.UUID(value).version == 7, response.headers
    return value


async def test_refusals_before_the_pipeline_have_a_request_id(policy_file: Path) -> None:
    """A wrong key, a body too large, an unknown path and an unknown model id: each answer
    names its own request id."""
    async with gateway(
        policy_file, backends=fakes("small", "big"), api_keys=KEY, max_body_bytes=1024
    ) as (client, _):
        wrong_key = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer nope-0000"}
        )
        too_large = await client.post("/v1/chat/completions", content=b"x" * 4096, headers=AUTH)
        no_route = await client.get("/v1/nothing-here", headers=AUTH)
        no_model = await client.get("/v1/models/gpt-9", headers=AUTH)
    statuses = [r.status_code for r in (wrong_key, too_large, no_route, no_model)]
    assert statuses == [401, 413, 404, 404]
    ids = {uuid7(r) for r in (wrong_key, too_large, no_route, no_model)}
    assert len(ids) == 4
    assert "request-id" not in wrong_key.headers  # Anthropic's name only under its API


async def test_anthropic_responses_carry_request_id_too(policy_file: Path) -> None:
    """A message (whole and streamed), count_tokens, a bad request and a wrong key under
    /v1/messages: ``request-id`` equals ``x-request-id``, the pipeline's own id kept."""
    async with gateway(policy_file, backends=fakes("small", "big"), api_keys=KEY) as (client, _):
        whole = await client.post("/v1/messages", json=MESSAGE, headers=AUTH)
        streamed = await client.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=AUTH)
        counted = await client.post("/v1/messages/count_tokens", json=COUNT, headers=AUTH)
        bad = await client.post("/v1/messages", json={**MESSAGE, "max_tokens": -1}, headers=AUTH)
        denied = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": "nope-0000"})
    assert [r.status_code for r in (whole, streamed, counted, bad, denied)] == [
        200,
        200,
        200,
        400,
        401,
    ]
    for response in (whole, streamed, counted, bad, denied):
        assert response.headers["request-id"] == uuid7(response)
        assert response.headers.get_list("x-request-id") == [response.headers["request-id"]]
    # The pipeline's id (the message id is made from it) is the one both headers carry.
    assert whole.json()["id"] == "msg_" + whole.headers["request-id"].replace("-", "")

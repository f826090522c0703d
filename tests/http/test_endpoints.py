"""The endpoints over HTTP (in-process ASGI, shipped fake backends): models, health, readiness,
metrics, response headers, streaming and the admin policy routes."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.policy import load_policy
from tests.http.helpers import TWO_TIERS, fakes, gateway

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EASY = "hi"
HARD = (
    "Write a Python function that parses a CSV file, then prove its complexity is O(n log n) "
    "step by step. First explain the algorithm, then implement it, then write unit tests. "
    "Why does it work? What are the edge cases?\n```python\ndef f(x):\n    return x\n```"
)


def chat_body(prompt: str = EASY, **fields: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": prompt}], **fields}


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.yaml", TWO_TIERS)


@pytest.fixture
def backends() -> dict[str, FakeBackend]:
    return fakes("small", "big")


@pytest.fixture
async def gw(
    policy_file: Path, backends: dict[str, FakeBackend]
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with gateway(policy_file, backends=backends) as pair:
        yield pair


def sse_data(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = []
    for block in response.text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payloads.append(block.removeprefix("data: "))
    return payloads


def sse_json(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of a stream that ended with ``[DONE]``."""
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    return [json.loads(p) for p in payloads[:-1]]


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- /v1/models, /healthz, /readyz -----------------------------------------------------------


async def test_models_lists_routes_then_backends_with_their_tier(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """/v1/models names each route first, then each backend with the tier it serves in."""
    client, _ = gw
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    entries = [(m["id"], m["tiergate"]["kind"]) for m in body["data"]]
    assert entries == [("auto", "route"), ("small", "backend"), ("big", "backend")]
    by_id = {m["id"]: m for m in body["data"]}
    assert all(m["object"] == "model" for m in body["data"])
    assert by_id["auto"]["tiergate"]["default"] is True
    assert by_id["auto"]["tiergate"]["tiers"] == ["cheap", "strong"]
    assert by_id["small"]["tiergate"]["tier"] == "cheap"
    assert by_id["big"]["tiergate"]["tier"] == "strong"
    assert by_id["big"]["tiergate"]["model"] == "big-model"
    assert by_id["small"]["tiergate"]["available"] is True


async def test_a_model_is_retrieved_as_the_list_has_it(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """``GET /v1/models/{id}`` answers the list's entry for each route and backend, so the
    official SDKs' ``models.retrieve`` works; an unknown id is a 404 ``model_not_found``."""
    client, app = gw
    listed = (await client.get("/v1/models")).json()["data"]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sdk = openai.AsyncOpenAI(
        base_url="http://gw/v1", api_key="unused", http_client=http, max_retries=0
    )
    for entry in listed:
        retrieved = await sdk.models.retrieve(entry["id"])
        assert retrieved.model_dump() == entry
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.models.retrieve("gpt-17-ultra")
    error = missing.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"], error["type"]) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    assert "'gpt-17-ultra'" in error["message"]
    assert "auto" in error["message"]
    claude = anthropic.AsyncAnthropic(  # this SDK speaks through httpx2
        base_url="http://gw",
        api_key="unused",
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
        max_retries=0,
    )
    assert (await claude.models.retrieve("auto")).id == "auto"


async def test_healthz(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """/healthz says ok as JSON."""
    client, _ = gw
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_backend(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """With every backend usable /readyz is 200 "ready" and lists each backend with its tier."""
    client, app = gw
    await app.state.runtime.active.pool.probe_all()
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["policy"] == app.state.runtime.active.policy.hash
    assert set(body["backends"]) == {"small", "big"}
    for name, tier in (("small", "cheap"), ("big", "strong")):
        report = body["backends"][name]
        assert report["tier"] == tier
        assert report["usable"] is True
        assert report["healthy"] is True
        assert report["breaker"] == "closed"


async def test_readyz_degraded_while_a_backend_is_down(tmp_path: Path) -> None:
    """An Ollama backend on a refused port makes /readyz "degraded" (still 200, another backend
    is usable), with a detail saying how to start Ollama; /v1/models marks it unavailable and
    requests still get answered."""
    policy = write_policy(
        tmp_path / "policy.yaml",
        f"""
version: 1
backends:
  small: {{type: fake, model: small-model}}
  local: {{type: ollama, model: "llama3.2:3b", base_url: "http://127.0.0.1:{closed_port()}"}}
tiers:
  - {{name: cheap, max_score: 0.3, backends: [small]}}
  - {{name: mid, backends: [local]}}
""",
    )
    async with gateway(policy) as (client, app):
        await app.state.runtime.active.pool.probe_all()
        response = await client.get("/readyz")
        models = (await client.get("/v1/models")).json()
        served = await client.post(CHAT, json=chat_body(HARD))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["backends"]["small"]["usable"] is True
    local = body["backends"]["local"]
    assert local["usable"] is False
    assert local["healthy"] is False
    assert local["tier"] == "mid"
    assert "ollama serve" in local["detail"]
    available = {m["id"]: m["tiergate"].get("available") for m in models["data"]}
    assert available["local"] is False
    assert available["small"] is True
    # The hard prompt belongs to the mid tier; with it down the request falls back to small.
    assert served.status_code == 200, served.text
    assert served.headers["x-tiergate-backend"] == "small"


async def test_readyz_unavailable_when_nothing_is_usable(tmp_path: Path) -> None:
    """With the default route's only backend down, /readyz is 503 "unavailable"."""
    policy = write_policy(
        tmp_path / "policy.yaml",
        f"""
version: 1
backends:
  local: {{type: ollama, model: "llama3.2:3b", base_url: "http://127.0.0.1:{closed_port()}"}}
tiers:
  - {{name: mid, backends: [local]}}
""",
    )
    async with gateway(policy) as (client, app):
        await app.state.runtime.active.pool.probe_all()
        response = await client.get("/readyz")
        chat = await client.post(CHAT, json=chat_body())
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["backends"]["local"]["usable"] is False
    assert chat.status_code == 503
    assert chat.json()["error"]["type"] == "service_unavailable"


async def test_readyz_counts_the_default_routes_candidates_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default route pinned to a tier without fallback, whose only backend is disabled: every
    default-route request gets 503, so /readyz says 503 "unavailable", though a backend of
    another tier (which this route never uses) is up."""
    monkeypatch.delenv("TIERGATE_TEST_ABSENT_KEY", raising=False)
    policy = write_policy(
        tmp_path / "policy.yaml",
        """
version: 1
backends:
  tiny: {type: fake, model: tiny-model}
  remote: {type: remote, model: openai/gpt-4o-mini, api_key_env: TIERGATE_TEST_ABSENT_KEY}
tiers:
  - {name: tiny, max_score: 0.2, backends: [tiny]}
  - {name: remote, backends: [remote]}
routes:
  onlyremote: {tier: remote, fallback: none}
  auto: {}
default_route: onlyremote
""",
    )
    async with gateway(policy, ledger=False) as (client, app):
        await app.state.runtime.active.pool.probe_all()
        response = await client.get("/readyz")
        chat = await client.post(CHAT, json=chat_body())
    assert chat.status_code == 503
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["default_route"] == {"name": "onlyremote", "candidates": ["remote"]}
    assert body["backends"]["tiny"]["usable"] is True  # up, and still not the route's


async def test_readyz_counts_every_tier_a_score_can_choose(tmp_path: Path) -> None:
    """A scored default route without fallback may send a request to any of its tiers: one
    usable of two is "degraded" (200), not "unavailable"."""
    policy = write_policy(
        tmp_path / "policy.yaml",
        f"""
version: 1
backends:
  small: {{type: fake, model: small-model}}
  local: {{type: ollama, model: "llama3.2:3b", base_url: "http://127.0.0.1:{closed_port()}"}}
tiers:
  - {{name: cheap, max_score: 0.3, backends: [small]}}
  - {{name: mid, backends: [local]}}
routes:
  auto: {{fallback: none}}
""",
    )
    async with gateway(policy, ledger=False) as (client, app):
        await app.state.runtime.active.pool.probe_all()
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["default_route"]["candidates"] == ["small", "local"]


async def test_readyz_shows_an_open_breaker(tmp_path: Path) -> None:
    """A backend whose circuit breaker opened is reported unusable, and readiness degraded."""
    policy = write_policy(
        tmp_path / "policy.yaml", TWO_TIERS + "breaker: {failures: 1, cooldown_s: 600}\n"
    )
    backends = fakes("small", "big")
    backends["small"].enqueue(FakeStep(error="unavailable"))
    async with gateway(policy, backends=backends) as (client, _):
        served = await client.post(CHAT, json=chat_body())
        response = await client.get("/readyz")
    assert served.headers["x-tiergate-backend"] == "big"
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["backends"]["small"]["breaker"] == "open"
    assert body["backends"]["small"]["usable"] is False


# --- /metrics --------------------------------------------------------------------------------


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def by_labels(
    samples: list[tuple[dict[str, str], float]], *names: str
) -> dict[tuple[str, ...], float]:
    return {tuple(labels[n] for n in names): value for labels, value in samples}


async def test_metrics_after_a_few_requests(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend]
) -> None:
    """/metrics counts requests by route, tier, backend and status, times them (latency, time
    to first token, scorer) and counts the fallback that one of them took."""
    client, _ = gw
    backends["small"].enqueue(FakeStep(error="unavailable"))
    sent = [
        await client.post(CHAT, json=chat_body()),  # small fails: falls back to big
        await client.post(CHAT, json=chat_body()),
        await client.post(CHAT, json=chat_body(stream=True)),
        await client.post(COMPLETIONS, json={"prompt": EASY}),
        await client.post(CHAT, json=chat_body(HARD)),
    ]
    assert [r.status_code for r in sent] == [200] * 5
    served = [(r.headers["x-tiergate-tier"], r.headers["x-tiergate-backend"]) for r in sent]
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = scrape(response.text)

    requests = by_labels(samples["tiergate_requests_total"], "route", "tier", "backend", "status")
    expected: dict[tuple[str, ...], float] = defaultdict(float)
    for tier, backend in served:
        expected[("auto", tier, backend, "200")] += 1
    assert requests == expected
    assert requests[("auto", "strong", "big", "200")] == 2

    for histogram in ("tiergate_request_duration_seconds", "tiergate_time_to_first_token_seconds"):
        counts = by_labels(samples[f"{histogram}_count"], "route", "tier", "backend")
        assert counts == {k[:3]: v for k, v in expected.items()}, histogram
        assert all(v > 0 for _, v in samples[f"{histogram}_sum"])

    fallbacks = by_labels(samples["tiergate_fallbacks_total"], "route", "backend", "error")
    assert fallbacks == {("auto", "small", "BackendUnavailable"): 1}

    assert samples["tiergate_scorer_duration_seconds_count"] == [({}, 5.0)]
    assert samples["tiergate_scorer_duration_seconds_sum"][0][1] > 0


async def test_a_failure_with_nothing_tried_after_it_is_no_fallback(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend]
) -> None:
    """tiergate_fallbacks_total counts a failed attempt only when the request then went to
    another candidate: a pinned backend's failure (no next candidate) and the last failure of a
    request whose every candidate failed are not fallbacks."""
    client, _ = gw
    backends["small"].enqueue(FakeStep(error="unavailable"))
    pinned = await client.post(CHAT, json=chat_body(model="small"))
    assert pinned.status_code == 503
    assert "x-tiergate-fallbacks" not in pinned.headers
    before = scrape((await client.get("/metrics")).text)
    assert "tiergate_fallbacks_total" not in before  # no fallback counted, under any label

    backends["small"].enqueue(FakeStep(error="unavailable"))
    backends["big"].enqueue(FakeStep(error="unavailable"))
    both = await client.post(CHAT, json=chat_body())  # small fails, then big: nothing after
    assert both.status_code == 503
    samples = scrape((await client.get("/metrics")).text)
    fallbacks = by_labels(samples["tiergate_fallbacks_total"], "route", "backend", "error")
    assert fallbacks == {("auto", "small", "BackendUnavailable"): 1}


# --- response headers ------------------------------------------------------------------------


def assert_uuid7(value: str) -> None:
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    millis = parsed.int >> 80
    assert abs(millis / 1000 - time.time()) < 60


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(CHAT, chat_body(), id="chat"),
        pytest.param(CHAT, chat_body(stream=True), id="chat-stream"),
        pytest.param(COMPLETIONS, {"prompt": EASY}, id="completion"),
        pytest.param(COMPLETIONS, {"prompt": EASY, "stream": True}, id="completion-stream"),
    ],
)
async def test_routing_headers(
    gw: tuple[httpx.AsyncClient, FastAPI], policy_file: Path, path: str, body: dict[str, object]
) -> None:
    """Every answer, whole or streamed, carries a UUIDv7 request id, the tier, backend and
    complexity score it was routed by, and the active policy's hash."""
    client, _ = gw
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    headers = response.headers
    assert_uuid7(headers["x-request-id"])
    assert headers["x-tiergate-policy"] == load_policy(policy_file).hash
    assert headers["x-tiergate-tier"] == "cheap"
    assert headers["x-tiergate-backend"] == "small"
    assert 0.0 <= float(headers["x-tiergate-complexity"]) <= 0.3
    response_id = sse_json(response)[0]["id"] if body.get("stream") else response.json()["id"]
    assert response_id.endswith(headers["x-request-id"])


async def test_request_ids_are_unique_and_time_ordered(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """Each request gets its own id; ids sort in the order the requests were made."""
    client, _ = gw
    ids = [(await client.post(CHAT, json=chat_body())).headers["x-request-id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert sorted(ids, key=lambda i: uuid.UUID(i).int >> 80) == ids


async def test_routing_headers_follow_the_score(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """A demanding prompt scores higher and is served by the strong tier; the headers say so."""
    client, _ = gw
    easy = await client.post(CHAT, json=chat_body(EASY))
    hard = await client.post(CHAT, json=chat_body(HARD))
    assert float(hard.headers["x-tiergate-complexity"]) > 0.3
    assert float(easy.headers["x-tiergate-complexity"]) < 0.3
    assert (hard.headers["x-tiergate-tier"], hard.headers["x-tiergate-backend"]) == (
        "strong",
        "big",
    )
    assert hard.json()["choices"][0]["message"]["content"] == "big answer"


async def test_error_responses_carry_request_id_and_policy(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend], policy_file: Path
) -> None:
    """Errors raised once a policy applied (an unknown model, every backend down) still carry
    the request id and the policy hash."""
    client, _ = gw
    policy_hash = load_policy(policy_file).hash
    unknown = await client.post(CHAT, json=chat_body(model="no-such-model"))
    backends["small"].enqueue(FakeStep(error="unavailable"))
    backends["big"].enqueue(FakeStep(error="unavailable"))
    down = await client.post(CHAT, json=chat_body())
    assert unknown.status_code == 400
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "backend_unavailable"
    for response in (unknown, down):
        assert_uuid7(response.headers["x-request-id"])
        assert response.headers["x-tiergate-policy"] == policy_hash
    assert unknown.headers["x-request-id"] != down.headers["x-request-id"]


# --- streaming -------------------------------------------------------------------------------


async def test_stream_failing_after_the_first_chunk_ends_with_an_error_event(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend]
) -> None:
    """Once text has reached the client a failure is not retried: the stream ends with an SSE
    error event and no [DONE], and the next tier is never asked."""
    client, _ = gw
    backends["small"].enqueue(
        FakeStep(reply="one two three four", error="unavailable", fail_after_chunks=2)
    )
    response = await client.post(CHAT, json=chat_body(stream=True))
    assert response.status_code == 200
    assert response.headers["x-tiergate-backend"] == "small"
    payloads = sse_data(response)
    assert "[DONE]" not in payloads
    events = [json.loads(p) for p in payloads]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "one two"
    error = events[-1]["error"]
    assert error["type"] == "upstream_error"
    assert error["code"] == "stream_interrupted"
    assert "incomplete" in error["message"]
    assert backends["big"].requests == []
    metrics = scrape((await client.get("/metrics")).text)
    statuses = by_labels(metrics["tiergate_requests_total"], "backend", "status")
    assert statuses == {("small", "502"): 1}


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(FakeStep(error="unavailable"), id="refused-at-open"),
        pytest.param(FakeStep(error="timeout", fail_after_chunks=0), id="failed-before-chunk"),
        pytest.param(FakeStep(error="bad_response", fail_after_chunks=0), id="bad-first-chunk"),
    ],
)
async def test_stream_failing_before_the_first_chunk_falls_back(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend], step: FakeStep
) -> None:
    """A stream that fails before any text is sent moves to the next tier; the client sees one
    clean stream from the fallback."""
    client, _ = gw
    backends["small"].enqueue(step)
    response = await client.post(CHAT, json=chat_body(stream=True))
    assert response.status_code == 200
    assert response.headers["x-tiergate-backend"] == "big"
    assert response.headers["x-tiergate-tier"] == "strong"
    events = sse_json(response)
    assert all("error" not in e for e in events)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "big answer"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(backends["small"].requests) == 1
    assert len(backends["big"].requests) == 1


async def test_stream_include_usage(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """With stream_options.include_usage every chunk has usage null except one last chunk with
    empty choices and the token counts."""
    client, _ = gw
    prompt = "please say something short"
    response = await client.post(
        CHAT, json=chat_body(prompt, stream=True, stream_options={"include_usage": True})
    )
    events = sse_json(response)
    *chunks, last = events
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks]
    text_chunks = [d for d in deltas if d]
    assert "".join(text_chunks) == "small answer"
    assert last["choices"] == []
    usage = last["usage"]
    # The fake backend counts whitespace-separated words.
    assert usage["prompt_tokens"] == len(prompt.split())
    assert usage["completion_tokens"] == len(text_chunks)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert {e["id"] for e in events} == {events[0]["id"]}
    assert all(e["object"] == "chat.completion.chunk" for e in events)


async def test_stream_without_usage_has_no_usage_chunk(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """Without include_usage no chunk carries usage and every chunk has one choice."""
    client, _ = gw
    events = sse_json(await client.post(CHAT, json=chat_body(stream=True)))
    assert all("usage" not in e and len(e["choices"]) == 1 for e in events)


def _by_choice(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    choices: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        for choice in event["choices"]:
            choices[choice["index"]].append(choice)
    return dict(choices)


async def test_stream_with_n_choices(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend]
) -> None:
    """n=3 streamed: each choice opens with the role, carries its own text and ends with its
    own finish_reason; the one usage event and the ledger row count all three calls; a seed
    becomes seed, seed+1, seed+2."""
    client, app = gw
    replies = ("alpha one", "beta two two", "gamma three three three")
    backends["small"].enqueue(*replies)
    prompt = "say something"
    response = await client.post(
        CHAT,
        json=chat_body(prompt, stream=True, n=3, seed=7, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200
    events = sse_json(response)
    choices = _by_choice(events)
    assert sorted(choices) == [0, 1, 2]
    texts = []
    for pieces in choices.values():
        assert pieces[0]["delta"]["role"] == "assistant"
        assert [p["finish_reason"] for p in pieces].count("stop") == 1
        assert pieces[-1]["finish_reason"] == "stop"
        texts.append("".join(p["delta"].get("content") or "" for p in pieces))
    assert sorted(texts) == sorted(replies)
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == []
    assert usage["prompt_tokens"] == 3 * len(prompt.split())
    assert usage["completion_tokens"] == sum(len(r.split()) for r in replies)
    assert sorted(r.seed or 0 for r in backends["small"].requests) == [7, 8, 9]
    assert app.state.runtime.active.pool["small"].in_flight == 0

    await app.state.ledger.flush()
    with app.state.ledger.engine.connect() as connection:
        row = connection.execute(
            select(*RequestRow.__table__.columns).where(
                RequestRow.id == response.headers["x-request-id"]
            )
        ).one()
    assert (row.status, row.stream, row.usage_estimated) == (200, True, False)
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


async def test_a_choice_failing_mid_stream_ends_the_stream_with_an_error(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend]
) -> None:
    """One of n streamed choices fails after the client had text: the stream ends with an
    error event (no [DONE], no retry), the request is a 502 in the metrics, and no backend is
    left reserved."""
    client, app = gw
    backends["small"].enqueue(
        "first choice is fine",
        FakeStep(reply="second one breaks here", error="unavailable", fail_after_chunks=2),
    )
    response = await client.post(CHAT, json=chat_body(stream=True, n=2))
    payloads = sse_data(response)
    assert "[DONE]" not in payloads
    error = json.loads(payloads[-1])["error"]
    assert error["code"] == "stream_interrupted"
    assert backends["big"].requests == []
    assert app.state.runtime.active.pool["small"].in_flight == 0
    metrics = scrape((await client.get("/metrics")).text)
    statuses = by_labels(metrics["tiergate_requests_total"], "backend", "status")
    assert statuses == {("small", "502"): 1}


async def test_a_choice_that_never_starts_times_out_like_an_attempt(tmp_path: Path) -> None:
    """An extra streamed choice whose backend never answers is given up after per_try_s (the
    first choice's limit too): the stream ends with an error event naming the setting, and the
    backend is not left reserved."""
    policy = write_policy(
        tmp_path / "policy.yaml",
        TWO_TIERS + "timeouts: {total_s: 5, per_try_s: 0.2, cold_start_s: 0, stream_idle_s: 5}\n",
    )
    small = FakeBackend.scripted("small", "small answer")
    small.enqueue("the first choice", FakeStep(delay_ms=30_000))
    async with gateway(policy, backends={"small": small, **fakes("big")}) as (client, app):
        response = await client.post(CHAT, json=chat_body(stream=True, n=2))
        payloads = sse_data(response)
        assert "[DONE]" not in payloads
        error = json.loads(payloads[-1])["error"]
        assert error["code"] == "stream_interrupted"
        assert "timeouts.per_try_s" in error["message"]
        text = "".join(
            c["delta"].get("content") or ""
            for p in payloads[:-1]
            for c in json.loads(p)["choices"]
            if c["index"] == 0
        )
        assert "the first choice".startswith(text)  # what came of choice 0 before the end
        assert app.state.runtime.active.pool["small"].in_flight == 0


async def test_completions_whole(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """/v1/completions answers a text_completion with the text and usage."""
    client, _ = gw
    response = await client.post(COMPLETIONS, json={"prompt": "say hi", "max_tokens": 50})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "small answer"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2
    assert body["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_with_n_choices(
    gw: tuple[httpx.AsyncClient, FastAPI], backends: dict[str, FakeBackend], stream: bool
) -> None:
    """/v1/completions takes n too: one text per index, usage for every call."""
    client, _ = gw
    backends["small"].enqueue("one", "two words")
    response = await client.post(
        COMPLETIONS,
        json={"prompt": "say hi", "n": 2, "stream": stream, "stream_options": None},
    )
    assert response.status_code == 200, response.text
    if stream:
        pieces = _by_choice(sse_json(response))
        texts = {i: "".join(p["text"] for p in ps) for i, ps in pieces.items()}
        finishes = {i: ps[-1]["finish_reason"] for i, ps in pieces.items()}
    else:
        body = response.json()
        texts = {c["index"]: c["text"] for c in body["choices"]}
        finishes = {c["index"]: c["finish_reason"] for c in body["choices"]}
        assert body["usage"]["prompt_tokens"] == 4
        assert body["usage"]["completion_tokens"] == 3
    assert sorted(texts.values()) == ["one", "two words"]
    assert finishes == {0: "stop", 1: "stop"}
    assert len(backends["small"].requests) == 2


async def test_completions_max_tokens_truncates(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """max_tokens reaches the backend; a cut answer says finish_reason "length"."""
    client, _ = gw
    body = (await client.post(COMPLETIONS, json={"prompt": "say hi", "max_tokens": 1})).json()
    assert body["choices"][0]["text"] == "small"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_completions_stream(gw: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """/v1/completions streams text_completion events ending in a finish reason and [DONE],
    with a usage event when asked."""
    client, _ = gw
    response = await client.post(
        COMPLETIONS,
        json={"prompt": "say hi", "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.status_code == 200
    events = sse_json(response)
    *chunks, last = events
    assert all(e["object"] == "text_completion" for e in events)
    assert all(e["id"].startswith("cmpl-") for e in events)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "small answer"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 2


# --- admin ----------------------------------------------------------------------------------


async def test_admin_explain_matches_what_a_request_does(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """POST /admin/policy/explain gives the score, the features that moved it, the tier and the
    ordered candidates, and agrees with how a real request with that prompt is routed."""
    client, _ = gw
    for prompt, cheapest_first in ((EASY, True), (HARD, False)):
        explained = await client.post("/admin/policy/explain", json={"prompt": prompt})
        assert explained.status_code == 200
        result = explained.json()
        served = await client.post(CHAT, json=chat_body(prompt))
        assert result["tier"] == served.headers["x-tiergate-tier"]
        assert result["candidates"][0]["backend"] == served.headers["x-tiergate-backend"]
        assert result["score"] == pytest.approx(
            float(served.headers["x-tiergate-complexity"]), abs=0.0005
        )
        assert result["policy"] == served.headers["x-tiergate-policy"]
        order = [c["backend"] for c in result["candidates"]]
        assert order == (["small", "big"] if cheapest_first else ["big", "small"])
        assert all(c["status"].startswith("ready") for c in result["candidates"])
        assert result["reasons"]
        assert {"feature", "value", "contribution"} <= set(result["features"][0])
    moved = {f["feature"] for f in result["features"] if f["contribution"] > 0}
    assert "code" in moved


async def test_admin_explain_takes_messages_and_checks_the_model(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """Explain accepts a chat `messages` list, pins a backend named as model, and refuses an
    unknown model or a body that is not JSON with a 400."""
    client, _ = gw
    pinned = await client.post("/admin/policy/explain", json={**chat_body(HARD), "model": "small"})
    assert pinned.status_code == 200
    assert pinned.json()["pinned"] is True
    assert pinned.json()["candidates"][0]["backend"] == "small"
    unknown = await client.post("/admin/policy/explain", json={"prompt": "x", "model": "nope"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "model"
    garbage = await client.post("/admin/policy/explain", content=b"{oops")
    assert garbage.status_code == 400
    assert garbage.json()["error"]["code"] == "invalid_json"


async def test_admin_policy_shows_source_and_hash(
    gw: tuple[httpx.AsyncClient, FastAPI], policy_file: Path
) -> None:
    """GET /admin/policy returns the file's text and the hash every response carries; after the
    file changes and a reload, both follow."""
    client, _ = gw
    shown = (await client.get("/admin/policy")).json()
    served = await client.post(CHAT, json=chat_body())
    assert shown["source"] == TWO_TIERS
    assert shown["hash"] == served.headers["x-tiergate-policy"]
    assert shown["hash"] == load_policy(policy_file).hash

    write_policy(policy_file, TWO_TIERS.replace("max_score: 0.3", "max_score: 0.4"))
    reloaded = await client.post("/admin/policy/reload")
    assert reloaded.status_code == 200
    assert reloaded.json()["applied"] is True
    after = (await client.get("/admin/policy")).json()
    assert after["hash"] != shown["hash"]
    assert after["hash"] == reloaded.json()["hash"]
    assert "max_score: 0.4" in after["source"]
    again = await client.post(CHAT, json=chat_body())
    assert again.headers["x-tiergate-policy"] == after["hash"]


@pytest.mark.parametrize("window", ["99999999d", "1000000000d", "next tuesday"])
async def test_admin_report_refuses_a_window_it_cannot_read(
    gw: tuple[httpx.AsyncClient, FastAPI], window: str
) -> None:
    """A window reaching before the year 1 was a 500 (OverflowError); it is a 400 naming the
    parameter, like any other window the gateway cannot read."""
    client, _ = gw
    for param in ("since", "until"):
        answer = await client.get("/admin/report", params={param: window})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == param


async def test_openapi_lists_every_public_route_with_its_body(
    gw: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """The hot routes (plain Starlette routes) are in /openapi.json with their request bodies,
    and every reference in the schema resolves, so schema-driven clients reach them."""
    client, _ = gw
    schema = (await client.get("/openapi.json")).json()
    served = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"}
    assert served <= set(schema["paths"])
    components = schema["components"]["schemas"]
    for path, field in [
        ("/v1/chat/completions", "messages"),
        ("/v1/completions", "prompt"),
        ("/v1/embeddings", "input"),
    ]:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        name = body["schema"]["$ref"].rsplit("/", 1)[1]
        assert field in components[name]["properties"]
    refs = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert refs
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(components)


@pytest.mark.parametrize(("oldest", "schema"), [(None, "at_head"), ("0011", "ahead_compatible")])
async def test_readyz_reports_the_ledger_schema(
    tmp_path: Path, oldest: str | None, schema: str
) -> None:
    """/readyz says where the ledger schema stands: at this gateway's head, or ahead of it and
    recorded compatible (a newer image migrated first: a rolling update), with what that means
    for operators; the gateway serves either way."""
    policy = write_policy(tmp_path / "policy.yaml", TWO_TIERS)
    if oldest is not None:  # what a newer tiergate's migration 9999 would leave
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
                connection.execute(
                    text("UPDATE ledger_schema_compat SET revision = '9999', oldest_code = :o"),
                    {"o": oldest},
                )
        finally:
            engine.dispose()
    async with gateway(policy, backends=fakes("small", "big")) as (client, _app):
        body = (await client.get("/readyz")).json()
        served = await client.post(CHAT, json=chat_body())
    assert served.status_code == 200
    assert body["ledger"]["schema"] == schema
    if oldest is not None:
        assert "at 9999, newer than this gateway" in body["ledger"]["detail"]


async def test_readyz_tells_operators_why_the_ledger_schema_is_unchecked(tmp_path: Path) -> None:
    """The ledger database does not answer at start (nothing listens at its port): the gateway
    serves, ``ledger.schema`` is ``unchecked``, and the admin key is told what happened and
    what to do (before: ``detail: null`` even to operators); a client key sees the state
    only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    policy = write_policy(tmp_path / "policy.yaml", TWO_TIERS)
    async with gateway(
        policy,
        backends=fakes("small", "big"),
        database_url=f"postgresql+psycopg://tiergate:secret@127.0.0.1:{port}/test",
        api_keys="app:k-app-1111",
        admin_key="k-admin-3333",
    ) as (client, _app):
        admin = await client.get("/readyz", headers={"authorization": "Bearer k-admin-3333"})
        seen = await client.get("/readyz", headers={"authorization": "Bearer k-app-1111"})
    ledger = admin.json()["ledger"]
    assert ledger["schema"] == "unchecked"
    detail = ledger["detail"]
    assert "has not answered since this gateway started" in detail
    assert "ledger_db_unreachable" in detail
    assert "without a restart" in detail
    assert "secret" not in admin.text
    assert seen.json()["ledger"] == {**ledger, "detail": None}

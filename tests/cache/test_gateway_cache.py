"""The exact response cache through the app: which requests it answers (deterministic ones,
per API key if asked, never on a route that turns it off), how (JSON or SSE, whichever way the
answer was made), for how long, and how a hit is accounted: its ledger row, the report's hit
rate and the metrics. Runs on the in-process store and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select

from adapters.base import Backend, Usage
from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.cache.service import CachedAnswer
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.ledger.report import build_report
from gateway.policy import PolicyError, load_policy
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PROMPT = "hello there friend"  # 3 words: the fakes count 3 prompt tokens
SMALL_REPLY = "small answer here"  # 3 completion tokens
WAIT_S = 10.0
KEYS = {"team-a": "key-for-team-a-0123456789", "team-b": "key-for-team-b-0123456789"}

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
routes:
  auto: {}
  fresh: {cache: false}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    small: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}
    big: {usd_per_1m_input: 1, usd_per_1m_output: 4}
"""


def policy(tmp_path: Path, responses: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    extra = f"cache:\n  responses: {{{responses}}}\n" if responses else ""
    path.write_text(POLICY + extra)
    return path


def two_fakes() -> dict[str, FakeBackend]:
    return {
        "small": FakeBackend.scripted("small", SMALL_REPLY, model="small-model"),
        "big": FakeBackend.scripted("big", "a big answer from the strong model", model="big-model"),
    }


def chat(prompt: str = PROMPT, **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], **fields}


@contextlib.asynccontextmanager
async def app(
    path: Path,
    backends: Mapping[str, Backend],
    store_url: str | None,
    **settings: object,
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    options: dict[str, object] = {"ledger": False, **settings}
    if store_url is not None:
        options["redis_url"] = SecretStr(store_url)
    async with gateway(path, backends=backends, **options) as pair:
        yield pair


async def post(
    client: httpx.AsyncClient, app_: FastAPI, body: dict[str, Any], path: str = CHAT, **kw: Any
) -> httpx.Response:
    """Send; then wait for the cache writes the request started, so the next one sees them."""
    response = await client.post(path, json=body, **kw)
    assert response.status_code == 200, response.text
    await app_.state.cache.flush()
    return response


def content(response: httpx.Response) -> str:
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an SSE body that ended with exactly one ``[DONE]``."""
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = [
        block.removeprefix("data: ") for block in response.text.split("\n\n") if block.strip()
    ]
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    return [json.loads(p) for p in payloads[:-1]]


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


def metric(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# --- which requests are answered from the cache ------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"temperature": 0}, id="temperature-0"),
        pytest.param({"temperature": 0.9, "seed": 42}, id="seeded"),
    ],
)
async def test_a_deterministic_request_hits_on_repeat(
    tmp_path: Path, store_url: str | None, fields: dict[str, Any]
) -> None:
    """A greedy or seeded request is answered by the backend once; its repeat comes from the
    cache with the same content, usage and tier, and never reaches a backend."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        first = await post(client, gw, chat(**fields))
        second = await post(client, gw, chat(**fields))
    assert first.headers["x-tiergate-cache"] == "miss"
    assert first.headers["x-tiergate-backend"] == "small"
    assert second.headers["x-tiergate-cache"] == "hit"
    assert second.headers["x-tiergate-backend"] == "cache"
    assert second.headers["x-tiergate-tier"] == first.headers["x-tiergate-tier"] == "cheap"
    assert content(second) == content(first) == SMALL_REPLY
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["model"] == first.json()["model"] == "small-model"
    assert second.json()["choices"][0]["finish_reason"] == "stop"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert second.json()["id"] != first.json()["id"]
    assert len(backends["small"].requests) == 1
    assert backends["big"].requests == []


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"temperature": 0.8}, id="temperature-0.8"),
        pytest.param({}, id="temperature-unset"),
        pytest.param({"temperature": 0.8, "seed": -1}, id="seed-minus-1"),
    ],
)
async def test_sampled_requests_are_not_cached(tmp_path: Path, fields: dict[str, Any]) -> None:
    """A request that samples goes to the backend every time; the header says "off". A
    negative seed is no seed (llama.cpp reads -1 as "random"), so it samples too."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, None) as (client, gw):
        labels = [(await post(client, gw, chat(**fields))).headers["x-tiergate-cache"]]
        labels.append((await post(client, gw, chat(**fields))).headers["x-tiergate-cache"])
    assert labels == ["off", "off"]
    assert len(backends["small"].requests) == 2


async def test_the_policy_may_cache_sampled_requests(tmp_path: Path) -> None:
    """With ``deterministic_only: false`` a sampled request's answer is replayed too."""
    backends = two_fakes()
    path = policy(tmp_path, "deterministic_only: false")
    async with app(path, backends, None) as (client, gw):
        first = await post(client, gw, chat(temperature=1.2))
        second = await post(client, gw, chat(temperature=1.2))
    assert (first.headers["x-tiergate-cache"], second.headers["x-tiergate-cache"]) == (
        "miss",
        "hit",
    )
    assert len(backends["small"].requests) == 1


async def test_the_cache_can_be_switched_off(tmp_path: Path) -> None:
    """With ``responses: {enabled: false}`` nothing is cached."""
    backends = two_fakes()
    async with app(policy(tmp_path, "enabled: false"), backends, None) as (client, gw):
        for _ in range(2):
            response = await post(client, gw, chat(temperature=0))
            assert response.headers["x-tiergate-cache"] == "off"
    assert len(backends["small"].requests) == 2


ADMIN_KEY = "admin-key-for-cache-tests-0123"


async def team_keys(client: httpx.AsyncClient) -> dict[str, str]:
    """Two virtual keys of team alpha and one of team beta, made through the admin API."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    for team in ("alpha", "beta"):
        made = await client.post("/admin/teams", json={"name": team}, headers=admin)
        assert made.status_code in (200, 201), made.text
    keys: dict[str, str] = {}
    for name, team in (("alpha-1", "alpha"), ("alpha-2", "alpha"), ("beta-1", "beta")):
        made = await client.post("/admin/keys", json={"name": name, "team": team}, headers=admin)
        assert made.status_code == 201, made.text
        keys[name] = made.json()["key"]
    return keys


TEAMS = ["team:alpha", "team:beta", "key:app"]
KEYS_APART = ["key:vk-", "key:vk-", "key:vk-", "key:app"]


@pytest.mark.parametrize(
    ("responses", "expected", "scopes"),
    [
        pytest.param("", ["miss", "hit", "miss", "hit", "miss"], TEAMS, id="default-team"),
        pytest.param("scope: team", ["miss", "hit", "miss", "hit", "miss"], TEAMS, id="team"),
        pytest.param("scope: key", ["miss", "miss", "miss", "hit", "miss"], KEYS_APART, id="key"),
        pytest.param(
            "per_key: true", ["miss", "miss", "miss", "hit", "miss"], KEYS_APART, id="per-key"
        ),
        pytest.param("scope: shared", ["miss", "hit", "hit", "hit", "hit"], [None], id="shared"),
    ],
)
async def test_cached_answers_stay_within_their_scope(
    tmp_path: Path,
    store_url: str | None,
    responses: str,
    expected: list[str],
    scopes: list[str | None],
) -> None:
    """By default one team's cached answer is never served to another team (a prompt and its
    answer are the team's data, and a hit would tell another team what was asked); the keys of
    one team share their answers. ``scope: key`` keeps each key apart, ``scope: shared`` (an
    operator's explicit choice) shares across teams. A bootstrap key, which has no team, is a
    scope of its own unless the cache is shared. The backend is told the same scope
    (``cache_scope``), for what it keeps itself (the tiny tier's prompt prefixes)."""
    backends = two_fakes()
    path = policy(tmp_path, responses)
    bootstrap = "bootstrap-key-for-cache-0123"
    settings: dict[str, Any] = {
        "ledger": True,
        "admin_key": SecretStr(ADMIN_KEY),
        "api_keys": SecretStr(f"app:{bootstrap}"),
    }
    labels: list[str] = []
    async with app(path, backends, store_url, **settings) as (client, gw):
        keys = {**await team_keys(client), "bootstrap": bootstrap}
        for who in ("alpha-1", "alpha-2", "beta-1", "beta-1", "bootstrap"):
            auth = {"authorization": f"Bearer {keys[who]}"}
            response = await post(client, gw, chat(temperature=0), headers=auth)
            labels.append(response.headers["x-tiergate-cache"])
    assert labels == expected
    asked = [request.cache_scope for request in backends["small"].requests]
    assert len(asked) == expected.count("miss")
    for scope, prefix in zip(asked, scopes, strict=True):
        if prefix is None:
            assert scope is None
        else:
            assert scope is not None
            assert scope.startswith(prefix)


def test_per_key_cannot_contradict_the_scope(tmp_path: Path) -> None:
    """``per_key: true`` is the older spelling of ``scope: key``; with another scope it is an
    error naming both."""
    with pytest.raises(PolicyError) as caught:
        load_policy(policy(tmp_path, "per_key: true, scope: shared"))
    assert "per_key" in str(caught.value)
    assert "scope" in str(caught.value)


async def test_a_route_with_cache_off_never_hits(tmp_path: Path, store_url: str | None) -> None:
    """Requests on a route with ``cache: false`` always reach a backend, even when the same
    request on another route is cached."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        cached = [await post(client, gw, chat(temperature=0)) for _ in range(2)]
        fresh = [await post(client, gw, chat(temperature=0, model="fresh")) for _ in range(3)]
    assert [r.headers["x-tiergate-cache"] for r in cached] == ["miss", "hit"]
    assert [r.headers["x-tiergate-cache"] for r in fresh] == ["off"] * 3
    assert {r.headers["x-tiergate-backend"] for r in fresh} == {"small"}
    assert len(backends["small"].requests) == 1 + 3


async def test_failed_and_cut_answers_are_not_cached(tmp_path: Path, store_url: str | None) -> None:
    """A request every backend failed, and a stream cut off mid-way, leave nothing in the
    cache: the next identical request reaches the backend."""
    backends = two_fakes()
    for name in ("small", "big"):
        backends[name].enqueue(FakeStep(error="unavailable"))
    backends["small"].enqueue(
        FakeStep(reply="one two three four", error="unavailable", fail_after_chunks=2)
    )
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        failed = await client.post(CHAT, json=chat(temperature=0))
        assert failed.status_code == 503
        await gw.state.cache.flush()
        cut = await post(client, gw, chat(temperature=0, stream=True))
        assert "[DONE]" not in cut.text
        whole = await post(client, gw, chat(temperature=0))
        again = await post(client, gw, chat(temperature=0))
    assert whole.headers["x-tiergate-cache"] == "miss"
    assert content(whole) == SMALL_REPLY
    assert again.headers["x-tiergate-cache"] == "hit"
    assert len(backends["small"].requests) == 3


async def test_an_answer_cut_by_max_tokens_is_cached_as_such(tmp_path: Path) -> None:
    """An answer that stopped at max_tokens is replayed with finish_reason "length"."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, None) as (client, gw):
        first = await post(client, gw, chat(temperature=0, max_tokens=2))
        second = await post(client, gw, chat(temperature=0, max_tokens=2))
    assert second.headers["x-tiergate-cache"] == "hit"
    assert content(second) == content(first) == "small answer"
    assert second.json()["choices"][0]["finish_reason"] == "length"


# --- streaming -----------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_is_served_from_an_answer_made_whole(
    tmp_path: Path, store_url: str | None, include_usage: bool
) -> None:
    """An answer cached by a non-streamed request replays as SSE: the same text, a finish
    reason, the usage chunk when asked, and ``[DONE]``; no backend is asked."""
    backends = two_fakes()
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        whole = await post(client, gw, chat(temperature=0))
        stream = await post(client, gw, chat(temperature=0, stream=True, **options))
    assert stream.headers["x-tiergate-cache"] == "hit"
    assert stream.headers["x-tiergate-backend"] == "cache"
    events = sse_events(stream)
    assert streamed_text(events) == content(whole)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finishes[-1] == "stop"
    if include_usage:
        assert events[-1]["choices"] == []
        assert events[-1]["usage"] == whole.json()["usage"]
    else:
        assert all("usage" not in e for e in events)
    assert len(backends["small"].requests) == 1


async def test_a_streamed_answer_serves_later_requests(
    tmp_path: Path, store_url: str | None
) -> None:
    """An answer made by a stream (to its end) is cached: a non-streamed repeat gets it as
    JSON and a streamed repeat as SSE, with the same text."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        made = await post(client, gw, chat(temperature=0, stream=True))
        whole = await post(client, gw, chat(temperature=0))
        replay = await post(client, gw, chat(temperature=0, stream=True))
    assert made.headers["x-tiergate-cache"] == "miss"
    assert streamed_text(sse_events(made)) == SMALL_REPLY
    assert whole.headers["x-tiergate-cache"] == "hit"
    assert content(whole) == SMALL_REPLY
    assert whole.json()["usage"]["completion_tokens"] == len(SMALL_REPLY.split())
    assert replay.headers["x-tiergate-cache"] == "hit"
    assert streamed_text(sse_events(replay)) == SMALL_REPLY
    assert len(backends["small"].requests) == 1


async def test_legacy_completions_hit_too(tmp_path: Path) -> None:
    """``/v1/completions`` answers a repeat from the cache in its own shape."""
    backends = two_fakes()
    body = {"model": "auto", "prompt": PROMPT, "temperature": 0}
    async with app(policy(tmp_path), backends, None) as (client, gw):
        first = await post(client, gw, body, COMPLETIONS)
        second = await post(client, gw, body, COMPLETIONS)
    assert second.headers["x-tiergate-cache"] == "hit"
    assert second.json()["object"] == "text_completion"
    assert second.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    assert len(backends["small"].requests) == 1


# --- expiry ------------------------------------------------------------------------------------


TTL_S = 2.0  # long enough for two requests on a loaded machine, short enough to wait out


async def test_an_answer_expires_after_its_ttl(tmp_path: Path, store_url: str | None) -> None:
    """After ``ttl_s`` the cached answer is gone: the next request reaches the backend (a miss)
    and is cached again."""
    backends = two_fakes()
    async with app(policy(tmp_path, f"ttl_s: {TTL_S}"), backends, store_url) as (client, gw):
        primed_at = time.monotonic()
        await post(client, gw, chat(temperature=0))
        hit = await post(client, gw, chat(temperature=0))
        assert hit.headers["x-tiergate-cache"] == "hit"
        assert time.monotonic() - primed_at < TTL_S  # else this check says nothing
        labels: list[str] = []

        async def poll() -> None:
            labels.append((await post(client, gw, chat(temperature=0))).headers["x-tiergate-cache"])

        deadline = time.monotonic() + WAIT_S
        while "miss" not in labels:
            assert time.monotonic() < deadline, "the answer never expired"
            await poll()
            await asyncio.sleep(0.05)
        expired_after = time.monotonic() - primed_at
        again = await post(client, gw, chat(temperature=0))
    assert expired_after >= TTL_S
    assert set(labels[:-1]) <= {"hit"}
    assert again.headers["x-tiergate-cache"] == "hit"
    assert len(backends["small"].requests) == 2


# --- accounting --------------------------------------------------------------------------------


def ledger_rows(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(*RequestRow.__table__.columns)).all()
    finally:
        engine.dispose()
    return {row.id: row for row in rows}


def report(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        return build_report(engine, since=datetime.now(UTC) - timedelta(hours=1))
    finally:
        engine.dispose()


async def test_ledger_rows_of_a_miss_and_a_hit(ledger_url: str, tmp_path: Path) -> None:
    """A miss is booked like any answer (cache "miss"); its hit is booked with backend
    "cache", tier and model of the original, cost 0 ("cache"), the original's cost as
    ``cache_saved_usd`` and the original's baseline; the report's hit rate counts it."""
    await asyncio.to_thread(upgrade, ledger_url)
    backends = two_fakes()
    settings = {"ledger": True, "database_url": SecretStr(ledger_url)}
    async with app(policy(tmp_path), backends, None, **settings) as (client, gw):
        miss = await post(client, gw, chat(temperature=0))
        hit = await post(client, gw, chat(temperature=0))
        off = await post(client, gw, chat(temperature=0.5))
        streamed_hit = await post(client, gw, chat(temperature=0, stream=True))
        await gw.state.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, ledger_url)
        figures = await asyncio.to_thread(report, ledger_url)
    first, second = rows[miss.headers["x-request-id"]], rows[hit.headers["x-request-id"]]
    assert (first.cache, first.backend, first.tier, first.model) == (
        "miss", "small", "cheap", "small-model",
    )  # fmt: skip
    # small: 3 x 0.1 / 1M + 3 x 0.4 / 1M = 1.5e-6; baseline: 3 x 2.5 / 1M + 3 x 10 / 1M = 37.5e-6
    assert (first.cost_usd, first.cost_source) == (Decimal("0.0000015"), "policy")
    assert first.baseline_cost_usd == Decimal("0.0000375")
    assert first.cache_saved_usd is None
    assert (second.cache, second.backend, second.tier, second.model) == (
        "hit", "cache", "cheap", "small-model",
    )  # fmt: skip
    assert (second.cost_usd, second.cost_source) == (Decimal(0), "cache")
    assert second.cache_saved_usd == first.cost_usd
    assert second.baseline_cost_usd == first.baseline_cost_usd
    assert (second.status, second.attempts, second.fallback_chain) == (200, 0, "")
    assert (second.prompt_tokens, second.completion_tokens) == (3, 3)
    assert second.route == first.route == "auto"
    assert Decimal(hit.headers["x-tiergate-cost-usd"]) == 0
    assert Decimal(hit.headers["x-tiergate-baseline-cost-usd"]) == first.baseline_cost_usd
    third = rows[off.headers["x-request-id"]]
    assert (third.cache, third.backend) == ("off", "small")
    fourth = rows[streamed_hit.headers["x-request-id"]]
    assert (fourth.cache, fourth.backend, fourth.stream) == ("hit", "cache", True)
    assert fourth.cache_saved_usd == first.cost_usd
    totals = figures["totals"]
    assert totals["requests"] == 4
    assert totals["cache_hit_rate"] == 0.5
    # The hits cost nothing against their baseline: all of it is saved.
    assert totals["cost_usd"] == pytest.approx(2 * 1.5e-6)
    assert totals["baseline_cost_usd"] == pytest.approx(4 * 37.5e-6)


async def test_lookup_metrics(tmp_path: Path, store_url: str | None) -> None:
    """``tiergate_cache_lookups_total`` counts each lookup by result; requests that may not
    use the cache do no lookup."""
    backends = two_fakes()
    async with app(policy(tmp_path), backends, store_url) as (client, gw):
        for body in (
            chat(temperature=0),
            chat(temperature=0),
            chat(temperature=0),
            chat("another prompt", temperature=0),
            chat(temperature=0.7),
            chat(temperature=0, model="fresh"),
        ):
            await post(client, gw, body)
        text = (await client.get("/metrics")).text
    assert metric(text, "tiergate_cache_lookups_total", result="hit") == 2
    assert metric(text, "tiergate_cache_lookups_total", result="miss") == 2
    assert metric(text, "tiergate_requests_total", backend="cache", status="200") == 2


def test_a_cached_answer_keeps_the_stop_sequence_that_ended_it() -> None:
    """The stop string a backend named comes back with the cached answer; an entry written
    before the cache kept it reads as unknown rather than as a miss."""
    answer = CachedAnswer(
        text="1",
        finish_reason="stop",
        usage=Usage(prompt_tokens=43, completion_tokens=2, cached_tokens=24),
        model="m",
        tier="only",
        backend="tiny",
        cost_usd=Decimal("0.001"),
        stop_sequence=",",
    )
    again = CachedAnswer.decode(answer.encode())
    assert again == answer
    assert again is not None
    assert again.completion(1.0).stop_sequence == ","
    older = json.loads(answer.encode())
    del older["stop_sequence"]
    decoded = CachedAnswer.decode(json.dumps(older).encode())
    assert decoded is not None
    assert decoded.stop_sequence is None

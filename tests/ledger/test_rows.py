"""Requests through the real app leave exactly one ledger row each, with the right fields and
the right price: answered, fallen back, failed, streamed, abandoned mid-stream; none for a
request refused before any backend. Prices by hand: policy per-token prices, hardware time, the
default hardware profile for an unpriced local backend, and litellm's map for a remote one."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from adapters.base import Backend, Timings, Usage
from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.models import RequestRow
from gateway.policy.pricing import PriceBook
from gateway.policy.schema import PricingSpec
from tests.adapters.remote import _upstream as _remote_upstream
from tests.http.helpers import gateway, served, until

CHAT = "/v1/chat/completions"
PROMPT = "hello there friend"  # 3 words: the fakes count 3 prompt tokens
KEY, KEY_ID = "key-for-team-a-0123456789", "team-a"
MILLION = Decimal(1_000_000)

# small and big are priced per token; the baseline is given explicitly (USD per 1M tokens).
POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    small: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}
    big: {usd_per_1m_input: 1, usd_per_1m_output: 4}
"""
SMALL_REPLY = "small answer here"  # 3 completion tokens
BIG_REPLY = "a big answer from the strong model"  # 7 completion tokens


def chat(prompt: str = PROMPT, **fields: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], **fields}


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


def rows(url: str) -> list[Any]:
    """Every ledger row, read directly."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(*RequestRow.__table__.columns)).all())
    finally:
        engine.dispose()


async def settled(app: FastAPI, url: str) -> list[Any]:
    """The rows, once the app's ledger has written everything it was given."""
    await app.state.ledger.flush()
    return await asyncio.to_thread(rows, url)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def app_on(
    url: str, policy: Path, backends: Mapping[str, Backend]
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The gateway with its ledger at ``url`` (migrated first: PostgreSQL must be at head)."""
    await asyncio.to_thread(upgrade, url)
    async with gateway(
        policy,
        backends=backends,
        database_url=SecretStr(url),
        api_keys=SecretStr(f"{KEY_ID}:{KEY}"),
    ) as pair:
        yield pair


def fake(name: str, *steps: FakeStep | str, **config: object) -> FakeBackend:
    return FakeBackend.scripted(name, *steps, model=f"{name}-model", **config)


def two_fakes() -> dict[str, FakeBackend]:
    return {"small": fake("small", SMALL_REPLY), "big": fake("big", BIG_REPLY)}


def money(header: str) -> Decimal:
    return Decimal(header)


# --- answered, fallen back, failed, refused ---------------------------------------------------


async def test_an_answer_has_one_row_with_its_fields(ledger_url: str, tmp_path: Path) -> None:
    """An answered request is one row: its id is the x-request-id (a UUIDv7), and route, tier,
    backend, model, score, key, tokens and cost are those of the response."""
    before = datetime.now(UTC)
    async with app_on(ledger_url, write(tmp_path, POLICY), two_fakes()) as (client, app):
        response = await client.post(CHAT, json=chat(), headers=auth())
        assert response.status_code == 200, response.text
        (row,) = await settled(app, ledger_url)
    after = datetime.now(UTC)
    headers, usage = response.headers, response.json()["usage"]
    assert row.id == headers["x-request-id"]
    assert uuid.UUID(row.id).version == 7
    ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
    assert before <= ts <= after
    assert row.key_id == KEY_ID
    assert row.policy_hash == headers["x-tiergate-policy"]
    assert (row.route, row.tier, row.backend) == ("auto", "cheap", "small")
    assert (row.tier, row.backend) == (headers["x-tiergate-tier"], headers["x-tiergate-backend"])
    assert row.model == response.json()["model"] == "small-model"
    assert row.score == pytest.approx(float(headers["x-tiergate-complexity"]), abs=0.0005)
    assert (row.status, row.error_class, row.attempts) == (200, None, 1)
    assert row.fallback_chain == "small"
    assert row.stream is False
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (3, 3, 0)
    assert row.usage_estimated is False
    assert row.latency_ms > 0
    assert row.server_ms is not None
    # small: 3 x 0.1 / 1M + 3 x 0.4 / 1M = 1.5e-6; baseline: 3 x 2.5 / 1M + 3 x 10 / 1M = 37.5e-6
    assert row.cost_source == "policy"
    assert row.cost_usd == Decimal("0.0000015")
    assert row.baseline_cost_usd == Decimal("0.0000375")
    # A baseline the policy prices by hand, naming no model: named by its prices.
    assert row.baseline_model == "unnamed ($2.5 in, $10 out per 1M tokens)"
    assert row.cost_usd == money(headers["x-tiergate-cost-usd"])
    assert row.baseline_cost_usd == money(headers["x-tiergate-baseline-cost-usd"])


async def test_a_fallback_records_both_attempts(ledger_url: str, tmp_path: Path) -> None:
    """When the first backend fails and the next answers, the row has 2 attempts, the chain
    "small>big", and the answering backend's price."""
    backends = two_fakes()
    backends["small"].enqueue(FakeStep(error="unavailable"))
    async with app_on(ledger_url, write(tmp_path, POLICY), backends) as (client, app):
        response = await client.post(CHAT, json=chat(), headers=auth())
        assert response.status_code == 200, response.text
        (row,) = await settled(app, ledger_url)
    assert response.headers["x-tiergate-fallbacks"] == "1"
    assert (row.id, row.status) == (response.headers["x-request-id"], 200)
    assert (row.attempts, row.fallback_chain) == (2, "small>big")
    assert (row.tier, row.backend, row.model) == ("strong", "big", "big-model")
    assert (row.prompt_tokens, row.completion_tokens) == (3, 7)
    # big: 3 x 1 / 1M + 7 x 4 / 1M = 31e-6; baseline: 3 x 2.5 / 1M + 7 x 10 / 1M = 77.5e-6
    assert row.cost_usd == Decimal("0.000031") == money(response.headers["x-tiergate-cost-usd"])
    assert row.baseline_cost_usd == Decimal("0.0000775")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [("unavailable", 503, "backend_unavailable"), ("timeout", 504, "backend_timeout")],
)
async def test_a_failed_request_is_recorded(
    ledger_url: str, tmp_path: Path, error: str, status: int, code: str
) -> None:
    """When every backend fails the request still has its row: its status, its error class,
    both attempts, no tokens, and cost_source "failed" (zero, not unknown)."""
    backends = two_fakes()
    backends["small"].enqueue(FakeStep(error=error))  # type: ignore[arg-type]
    backends["big"].enqueue(FakeStep(error=error))  # type: ignore[arg-type]
    async with app_on(ledger_url, write(tmp_path, POLICY), backends) as (client, app):
        response = await client.post(CHAT, json=chat(), headers=auth())
        (row,) = await settled(app, ledger_url)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert row.id == response.headers["x-request-id"]
    assert (row.status, row.error_class) == (status, code)
    assert (row.attempts, row.fallback_chain, row.backend) == (2, "small>big", "big")
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (0, 0, False)
    assert (row.cost_source, row.cost_usd, row.baseline_cost_usd) == ("failed", 0, 0)


async def test_a_request_refused_before_any_backend_has_no_row(
    ledger_url: str, tmp_path: Path
) -> None:
    """Bad input (no messages, broken JSON, an unknown model) reaches no backend and leaves no
    row; the good request sent after them leaves exactly one."""
    backends = two_fakes()
    async with app_on(ledger_url, write(tmp_path, POLICY), backends) as (client, app):
        refused = [
            await client.post(CHAT, json={"model": "auto", "messages": []}, headers=auth()),
            await client.post(CHAT, content=b"{not json", headers=auth()),
            await client.post(CHAT, json={**chat(), "model": "no-such-model"}, headers=auth()),
        ]
        good = await client.post(CHAT, json=chat(), headers=auth())
        found = await settled(app, ledger_url)
    assert [r.status_code for r in refused] == [400, 400, 400]
    assert good.status_code == 200
    assert sum(len(b.requests) for b in backends.values()) == 1
    assert [r.id for r in found] == [good.headers["x-request-id"]]


# --- streams ----------------------------------------------------------------------------------


async def test_a_stream_has_a_row_with_ttft(ledger_url: str, tmp_path: Path) -> None:
    """A completed stream is one row marked as a stream, with the reported usage, its price and
    a time to first token no later than its latency."""
    async with app_on(ledger_url, write(tmp_path, POLICY), two_fakes()) as (client, app):
        response = await client.post(
            CHAT, json=chat(stream=True, stream_options={"include_usage": True}), headers=auth()
        )
        assert response.status_code == 200, response.text
        (row,) = await settled(app, ledger_url)
    events = [
        json.loads(block.removeprefix("data: "))
        for block in response.text.split("\n\n")
        if block.startswith("data: {")
    ]
    usage = events[-1]["usage"]
    assert row.id == response.headers["x-request-id"]
    assert (row.stream, row.status, row.attempts, row.backend) == (True, 200, 1, "small")
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert row.usage_estimated is False
    assert row.ttft_ms is not None
    assert 0 < row.ttft_ms <= row.latency_ms
    assert row.cost_usd == Decimal("0.0000015")  # as the whole answer above
    assert row.baseline_cost_usd == Decimal("0.0000375")


SLOW = """
version: 1
backends:
  slow: {type: fake, model: slow-model}
tiers:
  - {name: only, backends: [slow]}
pricing:
  baseline: {usd_per_1m_input: 10, usd_per_1m_output: 10}
  backends:
    slow: {usd_per_1m_input: 1, usd_per_1m_output: 1}
"""


async def abandon(ledger_url: str, policy: Path) -> tuple[Any, str]:
    """Start a stream from the slow backend over real HTTP, hang up after its first chunk, and
    return the request's ledger row once it is written, and the request's id."""
    reply = " ".join(f"word{i}" for i in range(60))  # 60 chunks at 20/s: 3 s if read to the end
    backends = {"slow": fake("slow", reply, tokens_per_second=20)}
    async with (
        app_on(ledger_url, policy, backends) as (_, app),
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        async with client.stream("POST", CHAT, json=chat(stream=True), headers=auth()) as response:
            assert response.status_code == 200
            rid = response.headers["x-request-id"]
            async for line in response.aiter_lines():
                if '"content":"word0"' in line.replace(" ", ""):
                    break  # got the first chunk: hang up
        found: list[Any] = []

        def recorded() -> bool:
            found[:] = rows(ledger_url)
            return bool(found)

        await until(recorded, "the abandoned stream's row")
    (row,) = found
    assert row.id == rid
    assert (row.stream, row.status, row.backend) == (True, 499, "slow")
    assert row.usage_estimated is True
    assert 1 <= row.completion_tokens < 60  # what was sent before the hang-up
    assert row.prompt_tokens > 0  # the gateway's own count of the prompt
    return row, rid


async def test_an_abandoned_stream_is_recorded_as_499_with_estimated_usage(
    ledger_url: str, tmp_path: Path
) -> None:
    """A client that hangs up after the first chunk leaves a row with status 499, the usage
    estimated (and flagged so), priced on that estimate."""
    row, _ = await abandon(ledger_url, write(tmp_path, SLOW))
    # 1 USD per 1M tokens either way; the baseline 10 USD per 1M
    assert row.cost_source == "policy"
    assert row.cost_usd == Decimal(row.prompt_tokens + row.completion_tokens) / MILLION
    assert row.baseline_cost_usd == 10 * row.cost_usd


SLOW_BOX = SLOW.replace(
    "slow: {usd_per_1m_input: 1, usd_per_1m_output: 1}", "slow: {hardware: {usd_per_hour: 3.6}}"
)


async def test_an_abandoned_stream_on_a_box_is_charged_its_wall_time(
    ledger_url: str, tmp_path: Path
) -> None:
    """A stream cut short on a backend priced by the hour, which never reported its timings, is
    charged its wall time as the busy time (an estimate, flagged), not left unpriced."""
    row, _ = await abandon(ledger_url, write(tmp_path, SLOW_BOX))
    # 3.6 USD/h = 1e-6 USD per ms of the request's wall time (kept to 3 decimals of a ms)
    assert row.cost_source == "hardware"
    assert row.cost_usd > 0
    assert abs(row.cost_usd - Decimal(str(row.latency_ms)) / MILLION) <= Decimal("1E-9")


# --- prices -----------------------------------------------------------------------------------

HARDWARE = """
version: 1
backends:
  box: {type: fake, model: box-model}
  free: {type: fake, model: free-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [box]}
  - {name: strong, backends: [free]}
routes:
  auto: {}
  gratis: {tier: strong}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    box: {hardware: {usd_per_hour: 1.8, watts: 1000, usd_per_kwh: 1.8, concurrency: 2}}
"""


async def test_hardware_time_and_unpriced_backends(ledger_url: str, tmp_path: Path) -> None:
    """A backend priced by its hardware costs its busy time at the box's hourly cost plus power;
    a fake without a price is "unpriced": no cost (not $0), no cost header, but a baseline."""
    backends = {"box": fake("box", FakeStep(reply="boxed", delay_ms=40)), "free": fake("free", "x")}
    async with app_on(ledger_url, write(tmp_path, HARDWARE), backends) as (client, app):
        boxed = await client.post(CHAT, json=chat(), headers=auth())
        free = await client.post(CHAT, json={**chat(), "model": "gratis"}, headers=auth())
        found = {r.id: r for r in await settled(app, ledger_url)}
    box_row, free_row = found[boxed.headers["x-request-id"]], found[free.headers["x-request-id"]]
    # 1.8 USD/h + 1000 W x 1.8 USD/kWh = 3.6 USD/h = 1e-6 USD/ms, shared by 2: 5e-7 per busy ms
    assert box_row.cost_source == "hardware"
    assert box_row.server_ms >= 40
    expected = Decimal(str(box_row.server_ms)) * Decimal("5E-7")
    assert abs(box_row.cost_usd - expected) <= Decimal("1E-12")  # the column keeps 12 decimals
    assert abs(money(boxed.headers["x-tiergate-cost-usd"]) - expected) <= Decimal("1E-10")
    assert (free_row.cost_source, free_row.cost_usd) == ("unpriced", None)
    assert "x-tiergate-cost-usd" not in free.headers
    # 3 x 2.5 / 1M + 1 x 10 / 1M = 17.5e-6
    assert free_row.baseline_cost_usd == Decimal("0.0000175")
    assert money(free.headers["x-tiergate-baseline-cost-usd"]) == free_row.baseline_cost_usd


TINY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
tiers:
  - {name: local, backends: [tiny]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
"""


@pytest.mark.model
async def test_an_unpriced_local_backend_costs_the_default_hardware(
    ledger_url: str, tmp_path: Path
) -> None:
    """The real tiny model with no price in the policy is charged at the default hardware
    profile for its busy time: a non-zero cost flagged "default-hardware"."""
    async with app_on(ledger_url, write(tmp_path, TINY), {}) as (client, app):
        # The first request may load the model; the second runs on the loaded one.
        responses = [
            await client.post(CHAT, json=chat(max_tokens=4), headers=auth()) for _ in range(2)
        ]
        assert [r.status_code for r in responses] == [200, 200], responses[-1].text
        found = {r.id: r for r in await settled(app, ledger_url)}
    assert len(found) == 2
    assert {r.cost_source for r in found.values()} == {"default-hardware"}
    response = responses[1]
    row = found[response.headers["x-request-id"]]
    usage = response.json()["usage"]
    assert (row.backend, row.status, row.model) == ("tiny", 200, response.json()["model"])
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert row.load_ms is None
    assert row.server_ms is not None
    assert row.cost_usd > 0
    # 0.05 USD/h + 65 W x 0.15 USD/kWh = 0.05975 USD/h, per busy ms: / 3,600,000 (one at a time)
    expected = Decimal(str(row.server_ms)) * Decimal("0.05975") / Decimal(3_600_000)
    assert abs(row.cost_usd - expected) <= Decimal("1E-12")
    header = money(response.headers["x-tiergate-cost-usd"])  # 10 decimals; the row keeps 12
    assert abs(header - row.cost_usd) <= Decimal("0.5E-10")


def test_hardware_time_excludes_the_model_load() -> None:
    """A local backend is charged for its server time minus the part spent loading the model
    (``Timings.load_ms`` is part of ``server_ms``), never below zero."""
    from adapters.config import OllamaConfig

    book = PriceBook.build(
        PricingSpec.model_validate(
            {"backends": {"box": {"hardware": {"usd_per_hour": 3.6, "concurrency": 1}}}}
        ),
        {name: OllamaConfig(type="ollama", model="m") for name in ("box", "other")},
    )
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    # 3.6 USD/h = 1e-6 USD per ms
    warm = book.price("box", usage, Timings(latency_ms=900.0, server_ms=500.0))
    cold = book.price("box", usage, Timings(latency_ms=900.0, server_ms=500.0, load_ms=200.0))
    no_server = book.price("box", usage, Timings(latency_ms=900.0))
    assert (warm.source, warm.cost) == ("hardware", Decimal("0.0005"))
    assert cold.cost == Decimal("0.0003")
    assert no_server.cost == Decimal("0.0009")  # the wall time when the backend does not say
    assert book.price("box", usage, None).cost is None  # no timings: unknown, not $0
    default = book.price("other", usage, Timings(latency_ms=1.0, server_ms=3_600_000.0))
    assert default.source == "default-hardware"  # one hour of the default box: 0.05975 USD
    assert default.cost is not None
    assert default.cost.quantize(Decimal("1E-12")) == Decimal("0.05975")


def litellm_map() -> dict[str, Any]:
    """litellm's bundled price map, read from its JSON file."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def map_entry(model: str) -> dict[str, Any]:
    prices = litellm_map()
    entry: dict[str, Any] = prices.get(model) or prices[model.split("/", 1)[1]]
    return entry


REMOTE = f"""
version: 1
backends:
  remote: {{type: remote, model: {_remote_upstream.MODEL}, api_key_env: {_remote_upstream.KEY_ENV}}}
tiers:
  - {{name: remote, backends: [remote]}}
pricing:
  baseline: {{model: openai/gpt-4o}}
"""


async def test_a_remote_backend_is_priced_from_litellms_map(
    ledger_url: str, tmp_path: Path
) -> None:
    """A remote backend (its API mocked at the HTTP layer) is priced from litellm's map, and the
    baseline named by model is priced from the map too."""
    async with (
        _remote_upstream.upstream() as remote,
        app_on(ledger_url, write(tmp_path, REMOTE), {"remote": remote}) as (client, app),
    ):
        response = await client.post(CHAT, json=chat(), headers=auth())
        assert response.status_code == 200, response.text
        (row,) = await settled(app, ledger_url)
    usage = response.json()["usage"]
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    mini, big = map_entry(_remote_upstream.MODEL), map_entry("openai/gpt-4o")

    def at(entry: dict[str, Any]) -> Decimal:
        prompt, completion = Decimal(row.prompt_tokens), Decimal(row.completion_tokens)
        return prompt * Decimal(str(entry["input_cost_per_token"])) + completion * Decimal(
            str(entry["output_cost_per_token"])
        )

    assert row.cost_source == "litellm"
    assert row.cost_usd == at(mini) > 0
    assert row.baseline_cost_usd == at(big) > row.cost_usd
    assert row.baseline_model == "openai/gpt-4o"
    assert row.cost_usd == money(response.headers["x-tiergate-cost-usd"])


def test_cached_prompt_tokens_are_priced_at_the_cache_read_price() -> None:
    """Cached prompt tokens cost litellm's cache-read price, the rest the input price; the
    baseline prices the same tokens the same way on its own model."""
    from adapters.config import RemoteConfig

    model = _remote_upstream.MODEL
    book = PriceBook.build(
        PricingSpec.model_validate({"baseline": {"model": "openai/gpt-4o"}}),
        {"remote": RemoteConfig(type="remote", model=model)},
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    priced = book.price("remote", usage, Timings(latency_ms=1.0))
    mini, big = map_entry(model), map_entry("openai/gpt-4o")

    def at(entry: dict[str, Any]) -> Decimal:
        return (
            600 * Decimal(str(entry["input_cost_per_token"]))
            + 400 * Decimal(str(entry["cache_read_input_token_cost"]))
            + 100 * Decimal(str(entry["output_cost_per_token"]))
        )

    assert entry_has_cache_price(mini)
    assert entry_has_cache_price(big)
    assert (priced.source, priced.cost, priced.baseline) == ("litellm", at(mini), at(big))


def entry_has_cache_price(entry: Mapping[str, Any]) -> bool:
    price = entry.get("cache_read_input_token_cost")
    return price is not None and Decimal(str(price)) < Decimal(str(entry["input_cost_per_token"]))


OWN_PRICE = f"""
version: 1
backends:
  remote: {{type: remote, model: {_remote_upstream.MODEL}, api_key_env: {_remote_upstream.KEY_ENV}}}
tiers:
  - {{name: remote, backends: [remote]}}
pricing:
  backends:
    remote: {{usd_per_1m_input: 0.1, usd_per_1m_output: 0.4, usd_per_1m_cached_input: 0.05}}
"""


async def test_the_default_baseline_is_billed_at_the_baseline_backends_own_price(
    ledger_url: str, tmp_path: Path
) -> None:
    """With no ``pricing.baseline``, the baseline is the last tier's first remote backend, at
    the price the policy bills that backend at (a negotiated rate, say), not litellm's list
    price: a request that backend answered saved nothing. (Before, its baseline was the list
    price, and every such request showed a saving routing never made.)"""
    async with (
        _remote_upstream.upstream() as remote,
        app_on(ledger_url, write(tmp_path, OWN_PRICE), {"remote": remote}) as (client, app),
    ):
        response = await client.post(CHAT, json=chat(), headers=auth())
        assert response.status_code == 200, response.text
        (row,) = await settled(app, ledger_url)
    # 0.1 and 0.4 USD per 1M tokens
    billed = Decimal(row.prompt_tokens) * Decimal("0.1") + row.completion_tokens * Decimal("0.4")
    assert row.cost_source == "policy"
    assert row.cost_usd == billed / 1_000_000 > 0
    assert row.baseline_cost_usd == row.cost_usd
    assert row.baseline_model == _remote_upstream.MODEL  # the default baseline: that backend's
    assert money(response.headers["x-tiergate-baseline-cost-usd"]) == row.cost_usd
    assert map_entry(_remote_upstream.MODEL)["input_cost_per_token"] != 0.1 / 1_000_000


TINY_CACHED = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
tiers:
  - {name: local, backends: [tiny]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10, usd_per_1m_cached_input: 1.25}
"""


@pytest.mark.model
async def test_a_local_kv_cache_is_no_discount_on_the_baseline(
    ledger_url: str, tmp_path: Path
) -> None:
    """The real tiny model reuses its KV cache for a repeated prompt and reports those prompt
    tokens as cached; the baseline model would have read them at full price (no provider cached
    them), so the baseline does too, and so does a response-cache hit of that answer. (Before,
    they were read at the baseline's cache-read price: savings understated.)"""
    async with app_on(ledger_url, write(tmp_path, TINY_CACHED), {}) as (client, app):
        # Different max_tokens: two backend calls (no response-cache hit), one prompt prefix.
        bodies = [chat(max_tokens=4, temperature=0), chat(max_tokens=3, temperature=0)]
        responses = []
        for body in bodies:
            responses.append(await client.post(CHAT, json=body, headers=auth()))
            await app.state.cache.flush()  # the answer is kept for the next identical request
        hit = await client.post(CHAT, json=bodies[1], headers=auth())
        assert [r.status_code for r in [*responses, hit]] == [200, 200, 200], hit.text
        assert hit.headers["x-tiergate-cache"] == "hit"
        found = {r.id: r for r in await settled(app, ledger_url)}
    second = found[responses[1].headers["x-request-id"]]
    from_cache = found[hit.headers["x-request-id"]]
    assert second.cached_tokens > 0  # the KV cache was reused
    full = (
        Decimal(second.prompt_tokens) * Decimal("2.5") + second.completion_tokens * Decimal(10)
    ) / 1_000_000
    assert second.baseline_cost_usd == full
    assert (from_cache.backend, from_cache.cached_tokens) == ("cache", second.cached_tokens)
    assert from_cache.baseline_cost_usd == full
    assert money(hit.headers["x-tiergate-baseline-cost-usd"]) == full


async def test_n_choices_baseline_reads_the_prompt_once(ledger_url: str, tmp_path: Path) -> None:
    """``n: 3`` is three calls, each billed for the prompt; the baseline model answers three
    choices in one call that reads (and bills) the prompt once: its baseline has one prompt and
    the three completions. (Before, it had three prompts: savings overstated.)"""
    async with app_on(ledger_url, write(tmp_path, POLICY), two_fakes()) as (client, app):
        response = await client.post(CHAT, json=chat(n=3), headers=auth())
        assert response.status_code == 200, response.text
        assert len(response.json()["choices"]) == 3
        (row,) = await settled(app, ledger_url)
    # 3 calls of 3 prompt + 3 completion tokens; small: 9 x 0.1 / 1M + 9 x 0.4 / 1M = 4.5e-6
    # baseline: 3 x 2.5 / 1M + 9 x 10 / 1M = 97.5e-6 (not 9 x 2.5 + 9 x 10 = 112.5e-6)
    assert (row.prompt_tokens, row.completion_tokens) == (9, 9)
    assert row.cost_usd == Decimal("0.0000045")
    assert row.baseline_cost_usd == Decimal("0.0000975")
    assert money(response.headers["x-tiergate-baseline-cost-usd"]) == row.baseline_cost_usd


# --- a request no tier answered; a box held by a try that timed out ----------------------------


async def test_a_request_every_tier_failed_is_booked_against_every_tier_it_tried(
    ledger_url: str, tmp_path: Path
) -> None:
    """A request that failed on the cheap tier and then on the strong one is not the strong
    tier's failure alone: its row's tier is "cheap>strong" (the tiers in the order tried), so
    ``tiergate report --by tier`` shows it in a group of its own rather than as "strong: 1
    failed" (its backend stays the last one tried, whose error it returned)."""
    from gateway.ledger.report import build_report

    backends = two_fakes()
    backends["small"].enqueue(FakeStep(error="unavailable"))
    backends["big"].enqueue(FakeStep(error="unavailable"))
    async with app_on(ledger_url, write(tmp_path, POLICY), backends) as (client, app):
        failed = await client.post(CHAT, json=chat(), headers=auth())
        answered = await client.post(CHAT, json=chat(), headers=auth())
        found = {r.id: r for r in await settled(app, ledger_url)}
    assert (failed.status_code, answered.status_code) == (503, 200)
    row = found[failed.headers["x-request-id"]]
    assert (row.tier, row.backend, row.fallback_chain) == ("cheap>strong", "big", "small>big")
    engine = make_engine(ledger_url)
    try:
        report = build_report(engine, since=datetime(2000, 1, 1, tzinfo=UTC), by="tier")
    finally:
        engine.dispose()
    by_tier = {g["key"]: g for g in report["groups"]}
    assert set(by_tier) == {"cheap", "cheap>strong"}
    assert (by_tier["cheap>strong"]["requests"], by_tier["cheap>strong"]["error_rate"]) == (1, 1)
    assert by_tier["cheap"]["error_rate"] == 0


async def test_a_request_failing_twice_on_one_tier_keeps_that_tiers_name(
    ledger_url: str, tmp_path: Path
) -> None:
    """Two backends of one tier failing make no chain: the row's tier is that tier."""
    text = POLICY.replace("max_score: 0.3, backends: [small]}", "backends: [small, big]}").replace(
        "  - {name: strong, backends: [big]}\n", ""
    )
    backends = two_fakes()
    backends["small"].enqueue(FakeStep(error="unavailable"))
    backends["big"].enqueue(FakeStep(error="unavailable"))
    async with app_on(ledger_url, write(tmp_path, text), backends) as (client, app):
        failed = await client.post(CHAT, json=chat(), headers=auth())
        (row,) = await settled(app, ledger_url)
    assert failed.status_code == 503
    assert (row.tier, row.fallback_chain) == ("cheap", "small>big")


BOX_TIMES_OUT = """
version: 1
backends:
  box: {type: fake, model: box-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [box]}
  - {name: strong, backends: [big]}
routes:
  auto: {}
  boxed: {tier: cheap, fallback: none}
timeouts: {per_try_s: 0.3, total_s: 10, cold_start_s: 0}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    box: {hardware: {usd_per_hour: 3.6}}
    big: {usd_per_1m_input: 1, usd_per_1m_output: 4}
"""


async def test_a_try_that_timed_out_on_a_box_is_charged_the_time_it_held_it(
    ledger_url: str, tmp_path: Path
) -> None:
    """A backend priced by its machine time worked until the try timed out: the failed request
    is charged that time (3.6 USD/h = 1e-6 USD per ms, for at least the 300 ms try), priced
    "hardware", and still shows as failed (504, backend_timeout)."""
    backends = {"box": fake("box", FakeStep(reply="late", delay_ms=5000)), "big": fake("big", "x")}
    async with app_on(ledger_url, write(tmp_path, BOX_TIMES_OUT), backends) as (client, app):
        response = await client.post(CHAT, json=chat(model="boxed"), headers=auth())
        (row,) = await settled(app, ledger_url)
    assert response.status_code == 504, response.text
    assert (row.status, row.error_class, row.backend) == (504, "backend_timeout", "box")
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    assert row.cost_source == "hardware"
    assert Decimal("0.0003") <= row.cost_usd <= Decimal(str(row.latency_ms)) / MILLION
    assert row.baseline_cost_usd == 0


async def test_a_box_that_timed_out_before_a_fallback_answered_is_charged_too(
    ledger_url: str, tmp_path: Path
) -> None:
    """The box's timed-out try is part of the answered request's cost, as a cascade's discarded
    cheap call is: the big backend's tokens plus the box's held time."""
    backends = {
        "box": fake("box", FakeStep(reply="late", delay_ms=5000)),
        "big": fake("big", BIG_REPLY),
    }
    async with app_on(ledger_url, write(tmp_path, BOX_TIMES_OUT), backends) as (client, app):
        response = await client.post(CHAT, json=chat(), headers=auth())
        (row,) = await settled(app, ledger_url)
    assert response.status_code == 200, response.text
    assert (row.fallback_chain, row.backend, row.cost_source) == ("box>big", "big", "policy")
    tokens = Decimal("0.000031")  # big: 3 x 1 / 1M + 7 x 4 / 1M
    held = row.cost_usd - tokens
    assert Decimal("0.0003") <= held <= Decimal(str(row.latency_ms)) / MILLION
    assert money(response.headers["x-tiergate-cost-usd"]) == row.cost_usd

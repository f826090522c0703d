"""Token and money counters on /metrics, and the Grafana board that reads them: every series
the board asks for exists, with the labels it filters and groups by."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.governance import store
from gateway.governance.store import LimitsIn
from tests.http.helpers import gateway

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "deploy" / "grafana" / "tiergate.json"
CHAT = "/v1/chat/completions"
KEY = "metrics-client-key-0123456789"
OTHER_KEY = "metrics-other-team-key-0123456789"
ADMIN_KEY = "metrics-admin-key-0123456789"

POLICY = """
version: 1
backends:
  flaky: {type: fake, model: flaky-model}
  small: {type: fake, model: small-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.2, backends: [flaky, small]}
  - {name: strong, backends: [big]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10}
  backends:
    small: {usd_per_1m_input: 0.1, usd_per_1m_output: 0.4}
    big: {usd_per_1m_input: 1, usd_per_1m_output: 4}
cache:
  responses: {ttl_s: 60}
"""
PROMPTS = (
    "hi",
    "hello there",
    "Prove step by step that there are infinitely many primes, then generalise the argument.",
)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in samples(text)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


async def traffic(
    client: httpx.AsyncClient, app: FastAPI, headers: dict[str, str]
) -> list[httpx.Response]:
    """Three prompts (both tiers), one of them twice: the second answered from the cache."""
    answers = []
    for prompt in (*PROMPTS, PROMPTS[0]):
        body = {
            "model": "auto",
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        }
        response = await client.post(CHAT, json=body, headers=headers)
        assert response.status_code == 200, response.text
        answers.append(response)
        await app.state.cache.flush()  # answers are stored in the background
    return answers


def fakes() -> dict[str, FakeBackend]:
    """``flaky`` fails (a fallback to ``small``, each time until its breaker opens)."""
    return {
        "flaky": FakeBackend.scripted("flaky", FakeStep(error="unavailable"), model="flaky-model"),
        "small": FakeBackend.scripted("small", "a small answer", model="small-model"),
        "big": FakeBackend.scripted("big", "a longer answer from the big one", model="big-model"),
    }


async def test_tokens_and_money_by_tier_backend_and_route(policy: Path) -> None:
    async with gateway(policy, backends=fakes()) as (client, app):
        answers = await traffic(client, app, {})
        text = (await client.get("/metrics")).text
    tiers = {r.headers["x-tiergate-tier"] for r in answers}
    assert {"cheap", "strong"} <= tiers  # both tiers served
    for backend in ("small", "big"):
        served = [r for r in answers if r.headers["x-tiergate-backend"] == backend]
        assert served
        labels = {"backend": backend, "route": "auto"}
        prompt = sum(r.json()["usage"]["prompt_tokens"] for r in served)
        completion = sum(r.json()["usage"]["completion_tokens"] for r in served)
        cost = sum(Decimal(r.headers["x-tiergate-cost-usd"]) for r in served)
        baseline = sum(Decimal(r.headers["x-tiergate-baseline-cost-usd"]) for r in served)
        assert total(text, "tiergate_tokens_total", kind="input", **labels) == prompt
        assert total(text, "tiergate_tokens_total", kind="output", **labels) == completion
        assert total(text, "tiergate_cost_usd_total", **labels) == pytest.approx(float(cost))
        assert total(text, "tiergate_baseline_cost_usd_total", **labels) == pytest.approx(
            float(baseline)
        )
    (hit,) = [r for r in answers if r.headers["x-tiergate-cache"] == "hit"]
    # A cache hit cost nothing and saved its baseline.
    assert total(text, "tiergate_cost_usd_total", backend="cache") == 0
    assert total(text, "tiergate_baseline_cost_usd_total", backend="cache") == pytest.approx(
        float(hit.headers["x-tiergate-baseline-cost-usd"])
    )
    assert not [labels for name, labels, _ in samples(text) if "key" in labels]


async def test_key_labels_only_when_asked(policy: Path) -> None:
    """With key labels, /metrics holds every key's tokens and spend: the operator's to read
    (the admin key, the ops port), never another tenant's. Without them a client key may read
    it, as before."""
    headers = {"authorization": f"Bearer {KEY}"}
    other = {"authorization": f"Bearer {OTHER_KEY}"}
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    keys = f"team-a:{KEY},team-b:{OTHER_KEY}"
    async with gateway(
        policy, backends=fakes(), api_keys=keys, admin_key=ADMIN_KEY, metrics_key_labels=True
    ) as (client, app):
        await traffic(client, app, headers)
        refused = [await client.get("/metrics", headers=h) for h in (headers, other)]
        text = (await client.get("/metrics", headers=admin)).text
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "operator_only"
        assert "team-a" not in response.text
        assert "METRICS_KEY_LABELS" not in response.text  # no setting's name to a client
    async with gateway(policy, backends=fakes(), api_keys=keys, admin_key=ADMIN_KEY) as pair:
        unlabelled = await pair[0].get("/metrics", headers=other)
    assert unlabelled.status_code == 200
    keyed = [labels for name, labels, _ in samples(text) if name == "tiergate_tokens_total"]
    assert keyed
    assert all(labels["key"] == "team-a" for labels in keyed)
    assert KEY not in text  # the key id, never the key


SELECTOR = re.compile(r"\b(tiergate_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def board_queries() -> list[str]:
    board: dict[str, Any] = json.loads(BOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return queries


async def test_every_series_on_the_board_exists_with_its_labels(policy: Path) -> None:
    backends = fakes()
    backends["flaky"] = FakeBackend.scripted(
        "flaky", FakeStep(error="server_error"), model="flaky-model"
    )  # a 503: retried on the same backend, then the fallback
    async with gateway(policy, backends=backends) as (client, app):
        await traffic(client, app, {})
        # A virtual key kept off the route: the governance counter has a sample too.
        engine = app.state.ledger.engine
        made = store.create_key(engine, "elsewhere", LimitsIn(), routes=["other"])
        await app.state.keys.refresh(engine)
        headers = {"authorization": f"Bearer {made.key}"}
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        refused = await client.post(CHAT, json=body, headers=headers)
        assert refused.json()["error"]["code"] == "route_not_allowed"
        text = (await client.get("/metrics", headers=headers)).text
    labels_of: dict[str, set[str]] = {}
    for name, labels, _ in samples(text):
        labels_of.setdefault(name, set()).update(labels)
    queries = board_queries()
    assert len(queries) >= 15
    checked = 0
    for query in queries:
        grouped = {g.strip() for m in GROUPING.finditer(query) for g in m.group(1).split(",")}
        for match in SELECTOR.finditer(query):
            name, matchers = match.group(1), match.group(2) or ""
            assert name in labels_of, f"{name} (in {query!r}) is not on /metrics"
            used = set(MATCHER.findall(matchers))
            if name.endswith("_bucket"):
                used |= grouped
            else:
                used |= grouped - {"le"}
            missing = used - labels_of[name]
            assert not missing, f"{name} has no label {missing} (in {query!r})"
            checked += 1
    assert checked >= 20

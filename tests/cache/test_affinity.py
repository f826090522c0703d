"""Prefix affinity among a tier's replicas: the pure choice (warm prefix, load margin, least
busy), and the same through the app with two fake replicas of one model — on the in-process
registry and on Redis, where two gateway apps share it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from adapters.base import ChatRequest, Completion
from adapters.config import FakeConfig, FakeStep
from adapters.fake import FakeBackend
from gateway.cache.affinity import warm_prefixes, with_affinity
from gateway.policy import Decision
from tests.http.helpers import gateway, policy_from

CHAT = "/v1/chat/completions"
WAIT_S = 10.0

PURE_POLICY = """
version: 1
backends:
  a: {type: fake}
  b: {type: fake}
  c: {type: fake}
  big: {type: fake}
tiers:
  - {name: local, max_score: 0.5, backends: [a, b, c]}
  - {name: remote, backends: [big]}
"""


def decision() -> Decision:
    policy = policy_from(PURE_POLICY)
    return policy.decide(policy.route_for("auto"), 0.1)


def order(d: Decision) -> list[str]:
    return [c.backend for c in d.candidates]


class TestWithAffinity:
    def test_the_warm_replica_goes_first(self) -> None:
        """With loads equal, the replica holding the longest warm prefix goes first; the other
        replicas and the next tier follow in their order; its warm tokens are returned."""
        chosen, warm = with_affinity(
            decision(), {"a": 0, "b": 256, "c": 128}, {"a": 0, "b": 0, "c": 0}, margin=2
        )
        assert order(chosen) == ["b", "a", "c", "big"]
        assert warm == 256
        assert "affinity: b holds a warm 256-token prefix" in chosen.reasons[-1]

    def test_within_the_margin_affinity_holds(self) -> None:
        """The warm replica stays first while it has at most ``margin`` more in flight than
        the least busy one."""
        chosen, warm = with_affinity(decision(), {"b": 512}, {"a": 1, "b": 3, "c": 2}, margin=2)
        assert order(chosen)[0] == "b"
        assert warm == 512

    def test_past_the_margin_the_least_busy_goes_first(self) -> None:
        """One request more than the margin and the least busy replica goes first instead;
        the reason says why; the warm tokens are those of the replica chosen."""
        chosen, warm = with_affinity(
            decision(), {"b": 512, "c": 64}, {"a": 3, "b": 4, "c": 1}, margin=2
        )
        assert order(chosen) == ["c", "a", "b", "big"]
        assert warm == 64
        assert "affinity overridden" in chosen.reasons[-1]
        assert "3 more requests in flight than c (margin 2)" in chosen.reasons[-1]

    def test_margin_zero_means_any_extra_load_overrides(self) -> None:
        """With margin 0 a warm replica is preferred only while no replica is less busy."""
        tied, _ = with_affinity(decision(), {"b": 64}, {"a": 1, "b": 1, "c": 1}, margin=0)
        busier, _ = with_affinity(decision(), {"b": 64}, {"a": 1, "b": 2, "c": 1}, margin=0)
        assert order(tied)[0] == "b"
        assert order(busier)[0] == "a"

    def test_no_warm_prefix_least_busy_first(self) -> None:
        """With no warm prefix the least busy replica goes first, ties in policy order."""
        busy_a, warm = with_affinity(decision(), {}, {"a": 2, "b": 1, "c": 1}, margin=4)
        assert order(busy_a) == ["b", "a", "c", "big"]
        assert warm == 0
        assert "no warm prefix: least busy replica b first" in busy_a.reasons[-1]
        idle, _ = with_affinity(decision(), {"a": 0, "b": 0}, {"a": 0, "b": 0, "c": 0}, margin=4)
        assert order(idle) == ["a", "b", "c", "big"]

    def test_only_usable_replicas_are_chosen(self) -> None:
        """A replica missing from ``in_flight`` (unusable) is never put first, however warm;
        with fewer than two usable replicas the decision is left alone."""
        chosen, _ = with_affinity(decision(), {"b": 1024, "c": 64}, {"a": 0, "c": 0}, margin=4)
        assert order(chosen)[0] == "c"
        alone, warm = with_affinity(decision(), {"b": 1024}, {"a": 0}, margin=4)
        assert order(alone) == order(decision())
        assert warm == 0

    def test_a_single_replica_tier_is_left_alone(self) -> None:
        """A tier with one backend has no choice to make."""
        policy = policy_from(PURE_POLICY.replace("[a, b, c]", "[a]"))
        single = policy.decide(policy.route_for("auto"), 0.1)
        chosen, warm = with_affinity(single, {"a": 128}, {"a": 0, "big": 0}, margin=0)
        assert chosen == single
        assert warm == 128


class TestWarmPrefixes:
    def test_longest_recent_prefix_per_replica(self) -> None:
        """Each replica's warm length is its deepest stamp within the TTL; stale stamps and
        unknown members do not count."""
        now = 1000.0
        stamps = [
            {"a": now - 1, "b": now - 5, "gone": now},  # depth 1
            {"a": now - 1, "b": now - 700},  # depth 2: b's is stale
            {"a": now - 2},  # depth 3
            {},  # depth 4: nobody
        ]
        warm = warm_prefixes(stamps, ["a", "b", "c"], block_tokens=64, now=now, ttl_s=600)
        assert warm == {"a": 192, "b": 64, "c": 0}

    def test_nothing_stamped(self) -> None:
        """No stamps: every replica is cold."""
        assert warm_prefixes([], ["a", "b"], block_tokens=64, now=0, ttl_s=1) == {"a": 0, "b": 0}


# --- through the app --------------------------------------------------------------------------

APP_POLICY = """
version: 1
backends:
  a: {type: fake, model: shared-model}
  b: {type: fake, model: shared-model}
tiers:
  - {name: local, backends: [a, b]}
cache:
  prefixes: {block_tokens: 64, load_margin: 1}
"""
BLOCK = 64


class HeldBackend(FakeBackend):
    """A fake replica whose answers wait while it is held: a test's way to keep requests in
    flight on it for as long as it wants."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released = asyncio.Event()
        self.released.set()
        self.waiting = 0

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    async def acomplete(self, request: ChatRequest) -> Completion:
        self.waiting += 1
        try:
            await self.released.wait()
        finally:
            self.waiting -= 1
        return await super().acomplete(request)


def replicas() -> dict[str, HeldBackend]:
    return {
        name: HeldBackend(
            name,
            FakeConfig(
                type="fake", model="shared-model", script=(FakeStep(reply=f"{name} answer"),)
            ),
        )
        for name in ("a", "b")
    }


def system_prompt(topic: str, words: int = 520) -> str:
    """A long system prompt (over 500 tokens), different per topic."""
    lines = [
        f"You are the {topic} assistant. Rule {i}: answer about {topic} item {i}."
        for i in range(words // 10)
    ]
    return " ".join(lines)


def chat(system: str, user: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        **fields,
    }


async def until(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.005)


def in_flight(app: FastAPI, name: str) -> int:
    count: int = app.state.runtime.active.pool[name].in_flight
    return count


@contextlib.asynccontextmanager
async def app_with(
    tmp_path: Path, backends: dict[str, HeldBackend], store_url: str | None, name: str = "gw"
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    directory = tmp_path / name
    directory.mkdir()
    policy = directory / "policy.yaml"
    policy.write_text(APP_POLICY)
    settings: dict[str, object] = {"ledger": False}
    if store_url is not None:
        settings["redis_url"] = SecretStr(store_url)
    async with gateway(policy, backends=backends, **settings) as pair:
        try:
            yield pair
        finally:
            for backend in backends.values():
                backend.release()  # a failed test must not leave requests held for ever


async def send(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    return response


async def occupy(
    client: httpx.AsyncClient, app: FastAPI, backend: HeldBackend, body: dict[str, Any], n: int
) -> list[asyncio.Task[httpx.Response]]:
    """Hold ``backend`` and leave ``n`` more requests in flight on it."""
    backend.hold()
    target = in_flight(app, backend.name) + n
    tasks = [asyncio.create_task(send(client, body)) for _ in range(n)]
    await until(
        lambda: in_flight(app, backend.name) >= target or any(t.done() for t in tasks),
        f"{n} requests in flight on {backend.name}",
    )
    assert in_flight(app, backend.name) == target, [t.result().headers for t in tasks if t.done()]
    return tasks


def warm_tokens(response: httpx.Response) -> int:
    label = response.headers["x-tiergate-cache"]
    return int(label.removeprefix("prefix:")) if label.startswith("prefix:") else 0


def routed_counts(metrics_text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tiergate_prefix_routed_total":
                counts[sample.labels["result"]] = sample.value
    return counts


async def test_a_shared_prefix_returns_to_its_replica(
    tmp_path: Path, store_url: str | None
) -> None:
    """Two long system prompts, first served by a and by b (b because a was busy): every
    later request sharing one of them — with a different user turn — goes back to the replica
    that served it, and says how much of its prompt was warm there."""
    backends = replicas()
    finance, travel = system_prompt("finance"), system_prompt("travel")
    async with app_with(tmp_path, backends, store_url) as (client, app):
        first = await send(client, chat(finance, "What is a bond?"))
        assert first.headers["x-tiergate-backend"] == "a"  # no warm prefix, both idle: a
        assert warm_tokens(first) == 0
        await app.state.cache.flush()
        # a busy (a finance request held in flight): the first travel request goes to b
        held = await occupy(client, app, backends["a"], chat(finance, "Hold on."), 1)
        second = await send(client, chat(travel, "Where is Lisbon?"))
        assert second.headers["x-tiergate-backend"] == "b"
        backends["a"].release()
        await asyncio.gather(*held)
        await app.state.cache.flush()

        served: list[tuple[str, str, int]] = []
        for i in range(3):
            for topic, system in (("travel", travel), ("finance", finance)):
                response = await send(client, chat(system, f"Question {i} about {topic}: why?"))
                served.append(
                    (topic, response.headers["x-tiergate-backend"], warm_tokens(response))
                )
                await app.state.cache.flush()
        metrics = (await client.get("/metrics")).text
    assert [(topic, backend) for topic, backend, _ in served] == [
        ("travel", "b"), ("finance", "a"),
    ] * 3  # fmt: skip
    for _, _, warm in served:
        assert warm % BLOCK == 0
        assert warm >= 7 * BLOCK  # the 500-token system prompt: at least 7 whole blocks warm
    assert len(backends["a"].requests) == 1 + 1 + 3
    assert len(backends["b"].requests) == 1 + 3
    counts = routed_counts(metrics)
    assert counts["warm"] == 7  # the held one and the six follow-ups
    assert counts["cold"] == 2


async def test_the_load_margin_overrides_affinity(tmp_path: Path, store_url: str | None) -> None:
    """With the warm replica holding one request more than the margin (1) in flight, the next
    request sharing its prefix goes to the idle replica; while within the margin it does not."""
    backends = replicas()
    system = system_prompt("support")
    async with app_with(tmp_path, backends, store_url) as (client, app):
        warm_up = await send(client, chat(system, "Hello."))
        assert warm_up.headers["x-tiergate-backend"] == "a"
        await app.state.cache.flush()
        # Two requests sharing the prefix go to a, the second with a one request (the margin)
        # busier than b: affinity holds within the margin.
        held = await occupy(client, app, backends["a"], chat(system, "Held question."), 2)
        assert backends["a"].waiting == 2
        assert in_flight(app, "b") == 0
        overflow = await send(client, chat(system, "A third question."))
        assert overflow.headers["x-tiergate-backend"] == "b"
        backends["a"].release()
        answers = await asyncio.gather(*held)
    assert [r.headers["x-tiergate-backend"] for r in answers] == ["a", "a"]
    assert all(warm_tokens(r) >= 7 * BLOCK for r in answers)
    assert len(backends["b"].requests) == 1


async def test_two_gateways_share_the_registry(tmp_path: Path, redis_url: str) -> None:
    """A prefix first served by replica b through one gateway sends another gateway's request
    with that prefix to b too (the registry lives in Redis); a gateway with its own in-process
    registry knows nothing of it and picks a."""
    system = system_prompt("medicine")
    one, two, alone = replicas(), replicas(), replicas()
    async with app_with(tmp_path, one, redis_url, "one") as (client_one, app_one):
        held = await occupy(client_one, app_one, one["a"], chat(system_prompt("other"), "x"), 1)
        first = await send(client_one, chat(system, "What is a virus?"))
        assert first.headers["x-tiergate-backend"] == "b"
        one["a"].release()
        await asyncio.gather(*held)
        await app_one.state.cache.flush()
        async with app_with(tmp_path, two, redis_url, "two") as (client_two, _):
            shared = await send(client_two, chat(system, "What is a bacterium?"))
        async with app_with(tmp_path, alone, None, "alone") as (client_alone, _):
            unshared = await send(client_alone, chat(system, "What is a bacterium?"))
    assert shared.headers["x-tiergate-backend"] == "b"
    assert warm_tokens(shared) >= 7 * BLOCK
    assert (len(two["a"].requests), len(two["b"].requests)) == (0, 1)
    assert unshared.headers["x-tiergate-backend"] == "a"
    assert warm_tokens(unshared) == 0


async def test_a_cache_hit_chooses_no_replica(tmp_path: Path, store_url: str | None) -> None:
    """A request answered from the response cache skips replica choice altogether: only the
    miss is counted as routed by prefix, and no replica sees the repeats."""
    backends = replicas()
    body = chat(system_prompt("cached"), "Same question.", temperature=0)
    async with app_with(tmp_path, backends, store_url) as (client, app):
        labels = []
        for _ in range(3):
            labels.append((await send(client, body)).headers["x-tiergate-cache"])
            await app.state.cache.flush()
        counts = routed_counts((await client.get("/metrics")).text)
    assert labels == ["miss", "hit", "hit"]
    assert counts == {"cold": 1}
    assert len(backends["a"].requests) + len(backends["b"].requests) == 1

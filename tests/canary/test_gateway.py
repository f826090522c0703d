"""The canary in a running gateway (in-process ASGI, shipped fake backends, real SQLite
ledger): split with fallback, rollback, promotion, restart, shadow, admin endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.config import FakeStep
from adapters.fake import FakeBackend
from gateway.canary.assign import in_candidate
from gateway.canary.controller import CanaryController
from gateway.ledger.models import CanaryEventRow, RequestRow
from tests.http.helpers import gateway

CHAT = "/v1/chat/completions"
POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
  cand: {type: fake, model: cand-model}
  big: {type: fake, model: big-model}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
breaker: {failures: 3, cooldown_s: 3600}
canary:
  name: c1
  candidate: cand
  tier: cheap
  mode: split
  percent: 50
  sticky: {by: header, header: x-user}
  guardrails:
    min_samples: 10
    min_duration_s: 0
    max_error_rate: 0.1
    max_latency_p95_ratio: 1.5
  on_pass: %s
  evaluate_every_s: 3600
"""


def _keys(arm: str, n: int, name: str = "c1", percent: float = 50.0) -> list[str]:
    """``n`` sticky keys the canary ``name`` puts in ``arm``."""
    want = arm == "candidate"
    keys = (f"user-{i}" for i in range(10_000))
    return [k for k in keys if in_candidate(name, f"header:{k}", percent) == want][:n]


def _write(tmp_path: Path, on_pass: str = "promote", text: str = POLICY) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text % on_pass)
    return path


async def _ask(client: httpx.AsyncClient, user: str, **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    response = await client.post(CHAT, json=body, headers={"x-user": user})
    assert response.status_code == 200, response.text
    return response


def _controller(app: FastAPI) -> CanaryController:
    controller: CanaryController = app.state.canary
    return controller


def _status(canary: CanaryController) -> str:
    current = canary.current
    return "none" if current is None else current.status


async def _rows(app: FastAPI) -> list[Any]:
    await app.state.ledger.flush()
    with Session(app.state.ledger.engine) as connection:
        return list(connection.execute(select(RequestRow).order_by(RequestRow.ts)).scalars())


def _events(app: FastAPI) -> list[CanaryEventRow]:
    with Session(app.state.ledger.engine) as connection:
        query = select(CanaryEventRow).order_by(CanaryEventRow.ts)
        return list(connection.execute(query).scalars())


def _backends(candidate: FakeBackend, stable_delay_ms: float = 0.0) -> dict[str, FakeBackend]:
    stable = FakeBackend.scripted("small", FakeStep(reply="small answer", delay_ms=stable_delay_ms))
    return {"small": stable, "cand": candidate}


async def test_a_failing_candidate_is_rolled_back_after_min_samples(tmp_path: Path) -> None:
    """The candidate answers 3 requests, then fails every call: its keys are still answered,
    by the stable backend (fallback, then the open breaker); the canary waits for 10 samples,
    then rolls back with the reason and numbers recorded; afterwards the candidate takes no
    traffic, and a restarted gateway keeps it rolled back until an operator restarts the
    canary."""
    failing = FakeBackend.scripted("cand", FakeStep(error="unavailable"))
    failing.enqueue("candidate answer", "candidate answer", "candidate answer")
    policy = _write(tmp_path)
    async with gateway(policy, backends=_backends(failing)) as (client, app):
        canary = _controller(app)
        users = _keys("candidate", 10)
        served = []
        for user in users[:9]:
            response = await _ask(client, user)
            served.append(response.headers["x-tiergate-backend"])
            text = response.json()["choices"][0]["message"]["content"]
            assert text == {"cand": "candidate answer", "small": "small answer"}[served[-1]]
        assert served == ["cand"] * 3 + ["small"] * 6
        verdict = await canary.evaluate()
        assert verdict is not None
        assert verdict.outcome == "wait"
        assert _status(canary) == "running"

        await _ask(client, users[9])
        verdict = await canary.evaluate()
        assert verdict is not None
        assert verdict.outcome == "rollback"
        assert _status(canary) == "rolled_back"
        last = _events(app)[-1]
        assert (last.action, last.actor) == ("rollback", "auto")
        assert "error rate 70.00% > max_error_rate 10.00% over 10" in last.reason
        assert '"errors": 7' in last.metrics

        calls = len(failing.requests)
        response = await _ask(client, users[0])
        assert response.headers["x-tiergate-backend"] == "small"
        assert "x-tiergate-fallbacks" not in response.headers
        assert len(failing.requests) == calls  # not even tried
        rows = await _rows(app)
        assert [r.canary_arm for r in rows[:10]] == ["candidate"] * 10
        assert rows[-1].canary_arm is None

    restarted = FakeBackend.scripted("cand", "healthy now")
    async with gateway(policy, backends=_backends(restarted)) as (client, app):
        assert _status(_controller(app)) == "rolled_back"
        await _ask(client, users[0])
        assert restarted.requests == []

        # The candidate was fixed: the operator restarts the canary; its figures start afresh.
        fixed = await client.post("/admin/canary/restart", json={"reason": "fixed the model"})
        assert fixed.status_code == 200, fixed.text
        assert (fixed.json()["action"], fixed.json()["reason"]) == ("start", "fixed the model")
        assert _status(_controller(app)) == "running"
        response = await _ask(client, users[1])
        assert response.headers["x-tiergate-backend"] == "cand"
        assert response.json()["choices"][0]["message"]["content"] == "healthy now"
        status = (await client.get("/admin/canary")).json()
        assert status["status"] == "running"
        assert status["arms"]["candidate"]["requests"] == 1  # counted from the restart
        assert status["arms"]["candidate"]["error_rate"] == 0.0
        assert [e["action"] for e in status["events"][:3]] == ["start", "rollback", "start"]
        again = await client.post("/admin/canary/restart")
        assert again.status_code == 409
        assert "only a rolled-back or paused canary" in again.json()["error"]["message"]


async def test_a_healthy_candidate_is_promoted(tmp_path: Path) -> None:
    """A candidate that answers (and faster than stable) passes after 10 samples and is
    promoted: from then on it leads its tier for every key, the stable backend behind it."""
    healthy = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path), backends=_backends(healthy, 20.0)) as (client, app):
        canary = _controller(app)
        for user in _keys("candidate", 10):
            response = await _ask(client, user)
            assert response.headers["x-tiergate-backend"] == "cand"
        for user in _keys("stable", 10):
            response = await _ask(client, user)
            assert response.headers["x-tiergate-backend"] == "small"
        verdict = await canary.evaluate()
        assert verdict is not None
        assert verdict.outcome == "promote", verdict.reason
        assert _status(canary) == "promoted"
        event = _events(app)[-1]
        assert event.action == "promote"
        assert "guardrails passed over 10" in event.reason

        response = await _ask(client, _keys("stable", 1)[0])
        assert response.headers["x-tiergate-backend"] == "cand"
        assert (await _rows(app))[-1].canary_arm is None


async def test_wait_then_manual_promote_through_the_admin_api(tmp_path: Path) -> None:
    """on_pass: wait marks the canary ready; ``POST /admin/canary/promote`` promotes it;
    ``GET /admin/canary`` shows the state and figures per arm; a second promote is a 409."""
    healthy = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path, "wait"), backends=_backends(healthy, 20.0)) as (
        client,
        _app,
    ):
        for user in [*_keys("candidate", 10), *_keys("stable", 10)]:
            await _ask(client, user)
        status = (await client.get("/admin/canary", params={"evaluate": "true"})).json()
        assert status["status"] == "ready"
        assert status["arms"]["candidate"]["requests"] == 10
        assert status["arms"]["stable"]["requests"] == 10
        assert status["arms"]["candidate"]["error_rate"] == 0.0
        assert status["events"][0]["action"] == "ready"

        promoted = await client.post("/admin/canary/promote", json={"reason": "looks good"})
        assert promoted.status_code == 200
        assert promoted.json()["action"] == "promote"
        assert promoted.json()["reason"] == "looks good"
        again = await client.post("/admin/canary/promote")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "canary_conflict"
        bad = await client.post("/admin/canary/rollback", json={"reason": 5})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "reason"
        rolled = await client.post("/admin/canary/rollback")
        assert rolled.status_code == 200
        assert rolled.json()["actor"] == "admin"


async def test_two_gateways_assign_every_key_alike(tmp_path: Path) -> None:
    """Two app instances (separate processes' worth of state, separate ledgers) put each key
    on the same arm."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    users = [f"someone-{i}" for i in range(40)]
    seen: list[list[str]] = []
    for folder in (first, second):
        cand = FakeBackend.scripted("cand", "candidate answer")
        async with gateway(_write(folder), backends=_backends(cand)) as (client, _app):
            seen.append([(await _ask(client, u)).headers["x-tiergate-backend"] for u in users])
    assert seen[0] == seen[1]
    assert {"cand", "small"} == set(seen[0])


async def test_a_decision_by_another_replica_is_adopted(tmp_path: Path) -> None:
    """A rollback recorded by someone else (another replica, the CLI) reaches this gateway at
    its next evaluation."""
    from datetime import UTC, datetime

    from gateway.canary.events import CanaryEvent, latest_event, record_event

    cand = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path), backends=_backends(cand)) as (client, app):
        user = _keys("candidate", 1)[0]
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "cand"
        engine = app.state.ledger.engine
        start = latest_event(engine, "c1", "cand")
        assert start is not None
        record_event(
            engine,
            CanaryEvent(
                datetime.now(UTC), "c1", "cand", "rollback", "cli", "by hand", {}, follows=start.id
            ),
        )
        await _controller(app).evaluate()
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "small"


async def test_a_canary_added_by_a_reload_starts(tmp_path: Path) -> None:
    """A policy reload that adds a ``canary:`` block starts it (a ``start`` event) and its keys
    go to the candidate from then on."""
    path = tmp_path / "policy.yaml"
    without = (POLICY % "promote").split("canary:")[0]
    path.write_text(without)
    cand = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(path, backends=_backends(cand)) as (client, app):
        user = _keys("candidate", 1)[0]
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "small"
        assert _status(_controller(app)) == "none"
        path.write_text(POLICY % "promote")
        assert (await app.state.runtime.reload("admin")).applied
        await _controller(app).evaluate()
        assert _status(_controller(app)) == "running"
        assert [e.action for e in _events(app)] == ["start"]
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "cand"


async def test_without_a_ledger_the_canary_routes_but_is_not_judged(tmp_path: Path) -> None:
    """With the ledger off the split still applies; there is nothing to evaluate."""
    cand = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path), backends=_backends(cand), ledger=False) as (client, app):
        user = _keys("candidate", 1)[0]
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "cand"
        assert await _controller(app).evaluate() is None
        assert _status(_controller(app)) == "running"


async def test_a_request_the_candidate_cannot_serve_takes_no_part(tmp_path: Path) -> None:
    """A candidate without logprobs is not given a key's logprobs request: the stable backend
    answers it and the row has no arm; the key's plain requests still go to the candidate."""
    text = POLICY.replace(
        "cand: {type: fake, model: cand-model}",
        "cand: {type: fake, model: cand-model, capabilities: {logprobs: false}}",
    ).replace(
        "small: {type: fake, model: small-model}",
        "small: {type: fake, model: small-model, capabilities: {logprobs: true}}",
    )
    cand = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path, text=text), backends=_backends(cand)) as (client, app):
        user = _keys("candidate", 1)[0]
        response = await _ask(client, user, logprobs=True)
        assert response.headers["x-tiergate-backend"] == "small"
        assert (await _rows(app))[-1].canary_arm is None
        assert (await _ask(client, user)).headers["x-tiergate-backend"] == "cand"


async def test_a_prompt_too_long_for_the_candidate_takes_no_part(tmp_path: Path) -> None:
    """A candidate with a smaller context window than the prompt needs is skipped like a
    missing capability: the stable backend answers, the row has no arm."""
    text = POLICY.replace(
        "cand: {type: fake, model: cand-model}",
        "cand: {type: fake, model: cand-model, capabilities: {context_window: 256}}",
    )
    cand = FakeBackend.scripted("cand", "candidate answer")
    async with gateway(_write(tmp_path, text=text), backends=_backends(cand)) as (client, app):
        user = _keys("candidate", 1)[0]
        short = await _ask(client, user, max_tokens=16)
        assert short.headers["x-tiergate-backend"] == "cand"
        # ~300 prompt tokens + 16 do not fit 256; the cheap tier's scorer still picks "cheap".
        response = await _ask(client, user, max_tokens=16, messages=[
            {"role": "user", "content": "hi there " * 150}
        ])  # fmt: skip
        assert response.headers["x-tiergate-tier"] == "cheap"
        assert response.headers["x-tiergate-backend"] == "small"
        assert (await _rows(app))[-1].canary_arm is None

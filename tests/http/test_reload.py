"""Hot reload of the policy: file change, SIGHUP and the admin call, against a real
``tiergate serve`` process (and in-process where the test needs the live objects).

Waits are on events, never on time: the server's JSON log is read line by line as it is written,
and a test waits (bounded) for the log event that says the reload happened, then checks the
server's behaviour over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from adapters import load_backend
from adapters.base import Backend
from adapters.config import BackendConfig, FakeConfig
from adapters.fake import FakeBackend
from gateway.app import create_app
from gateway.routing.runtime import Runtime
from gateway.settings import Settings
from tests.http.live_server import (
    GENEROUS,
    STRICT,
    WAIT_S,
    Server,
    fake_policy,
    hash_of,
    reload_counts,
    replace_file,
)

INVALID = fake_policy().replace("backends: [big]", "backends: [huge]")
INVALID_PATH = "tiers[1].backends[0]"


def reply(response: httpx.Response) -> str:
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


# --- the reload triggers, against the real server --------------------------------------------


def test_editing_the_file_applies_the_new_policy(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """A changed file is picked up: responses carry the new hash and follow the new thresholds."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    server = serve(policy, watch=True)
    first = server.chat()
    assert first.headers["x-tiergate-policy"] == hash_of(policy)
    assert STRICT < float(first.headers["x-tiergate-complexity"]) <= GENEROUS
    assert first.headers["x-tiergate-tier"] == "cheap"
    assert reply(first) == "small v1"

    # In place, as `echo > file` would.
    mark = server.mark()
    policy.write_text(fake_policy(cheap_max=STRICT, big="big v2"))
    applied = server.wait_for("policy_applied", since=mark, trigger="file_change")
    assert applied["hash"] == hash_of(policy)
    second = server.chat()
    assert second.headers["x-tiergate-policy"] == hash_of(policy)
    assert second.headers["x-tiergate-tier"] == "strong"
    assert second.headers["x-tiergate-backend"] == "big"
    assert reply(second) == "big v2"

    # Replaced, as editors save.
    mark = server.mark()
    replace_file(policy, fake_policy(small="small v3"))
    server.wait_for("policy_applied", since=mark, trigger="file_change", hash=hash_of(policy))
    third = server.chat()
    assert third.headers["x-tiergate-policy"] == hash_of(policy)
    assert third.headers["x-tiergate-tier"] == "cheap"
    assert reply(third) == "small v3"


def test_sighup_reloads_when_watching_is_off(tmp_path: Path, serve: Callable[..., Server]) -> None:
    """With the file watch disabled, a changed file is applied on SIGHUP and only then."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    server = serve(policy, watch=False)
    old_hash = hash_of(policy)

    replace_file(policy, fake_policy(small="after the signal"))
    assert server.chat().headers["x-tiergate-policy"] == old_hash
    mark = server.mark()
    server.proc.send_signal(signal.SIGHUP)
    applied = server.wait_for("policy_applied", since=mark, trigger="sighup")
    assert applied["hash"] == hash_of(policy)
    assert applied["previous"] == old_hash
    response = server.chat()
    assert response.headers["x-tiergate-policy"] == hash_of(policy)
    assert reply(response) == "after the signal"
    assert server.reloads() == {("applied", "sighup"): 1.0}


def test_admin_reload_applies_rejects_and_counts(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """The admin call reloads; an invalid file gets a 422 with its problems and changes nothing."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    server = serve(policy, watch=False)
    good_hash = hash_of(policy)

    unchanged = server.admin_reload()
    assert unchanged.status_code == 200
    assert unchanged.json()["applied"] is False
    assert unchanged.json()["hash"] == good_hash

    replace_file(policy, INVALID)
    mark = server.mark()
    rejected = server.admin_reload()
    assert rejected.status_code == 422
    body = rejected.json()
    assert body["applied"] is False
    assert body["hash"] == good_hash
    assert any(
        line.startswith(f"{policy}: {INVALID_PATH}: unknown backend 'huge'")
        for line in body["problems"]
    ), body
    logged = server.wait_for("policy_rejected", since=mark, trigger="admin")
    assert logged["problems"] == body["problems"]
    still = server.chat()
    assert still.headers["x-tiergate-policy"] == good_hash
    assert reply(still) == "small v1"

    replace_file(policy, fake_policy(small="fixed"))
    fixed = server.admin_reload()
    assert fixed.status_code == 200
    assert fixed.json()["applied"] is True
    assert fixed.json()["hash"] == hash_of(policy)
    response = server.chat()
    assert response.headers["x-tiergate-policy"] == hash_of(policy)
    assert reply(response) == "fixed"
    assert server.reloads() == {
        ("unchanged", "admin"): 1.0,
        ("rejected", "admin"): 1.0,
        ("applied", "admin"): 1.0,
    }


def test_invalid_file_is_rejected_and_the_last_good_policy_serves(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    """A broken edit is logged as policy_rejected with the reason; fixing the file applies it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    server = serve(policy, watch=True)
    good_hash = hash_of(policy)

    mark = server.mark()
    replace_file(policy, INVALID)
    event = server.wait_for("policy_rejected", since=mark, trigger="file_change")
    assert event["level"] == "error"
    assert any(p.startswith(f"{policy}: {INVALID_PATH}: ") for p in event["problems"]), event
    response = server.chat()
    assert response.headers["x-tiergate-policy"] == good_hash
    assert reply(response) == "small v1"

    mark = server.mark()
    replace_file(policy, fake_policy(small="repaired"))
    server.wait_for("policy_applied", since=mark, trigger="file_change", hash=hash_of(policy))
    response = server.chat()
    assert response.headers["x-tiergate-policy"] == hash_of(policy)
    assert reply(response) == "repaired"
    counts = server.reloads()
    assert counts[("rejected", "file_change")] >= 1
    assert counts[("applied", "file_change")] >= 1


# --- in-process, where the test needs the live objects ---------------------------------------


class ClosingFake(FakeBackend):
    """The shipped fake, with an event set when the gateway closes it."""

    def __init__(self, name: str, config: FakeConfig) -> None:
        super().__init__(name, config)
        self.closed_event = asyncio.Event()

    async def aclose(self) -> None:
        await super().aclose()
        self.closed_event.set()


class Recorder:
    """A backend factory that builds real backends and remembers each one it built."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, name: str, config: BackendConfig) -> Backend:
        self.built.append(name)
        if isinstance(config, FakeConfig):
            return ClosingFake(name, config)
        return load_backend(name, config)


@contextlib.asynccontextmanager
async def running(
    policy: Path, factory: Recorder
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with its lifespan running (no keys, no file watch), and a client for it."""
    settings = Settings(
        policy=policy,
        watch_policy=False,
        api_keys=None,
        admin_key=None,
        database_url=SecretStr(f"sqlite:///{policy.parent / 'ledger.db'}"),
        outbox_path=policy.parent / "outbox.db",
    )
    app = create_app(settings, backend_factory=factory, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, app


THREE = """
version: 1
backends:
  small: {type: fake, script: [{reply: "small"}]}
  big: {type: fake, script: [{reply: "big v1"}]}
  old: {type: fake, script: [{reply: "old"}]}
tiers:
  - {name: cheap, max_score: 0.5, backends: [small]}
  - {name: strong, backends: [big, old]}
"""


async def test_reload_keeps_unchanged_backends_and_builds_only_changed_ones(
    tmp_path: Path,
) -> None:
    """A backend whose config did not change keeps its object; changed and new ones are built,
    dropped ones are closed."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(THREE)
    factory = Recorder()
    async with running(policy, factory) as (client, app):
        runtime: Runtime = app.state.runtime
        before = runtime.active.pool
        small, big, old = before["small"], before["big"], before["old"]
        assert sorted(factory.built) == ["big", "old", "small"]

        policy.write_text(
            THREE.replace("big v1", "big v2")
            .replace('  old: {type: fake, script: [{reply: "old"}]}', "  new: {type: fake}")
            .replace("[big, old]", "[big, new]")
        )
        response = await client.post("/admin/policy/reload")
        assert response.status_code == 200
        assert response.json()["applied"] is True

        after = runtime.active.pool
        assert after["small"] is small
        assert after["small"].backend is small.backend
        assert after["big"].backend is not big.backend
        assert after.get("old") is None
        assert factory.built[3:] == ["big", "new"]
        assert isinstance(old.backend, ClosingFake)
        async with asyncio.timeout(WAIT_S):
            await old.backend.closed_event.wait()
        assert isinstance(small.backend, ClosingFake)
        assert not small.backend.closed


async def test_reload_metrics_count_each_result(tmp_path: Path) -> None:
    """tiergate_policy_reloads_total counts applied, rejected and unchanged reloads apart."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    async with running(policy, Recorder()) as (client, _app):

        async def counts() -> dict[tuple[str, str], float]:
            return reload_counts((await client.get("/metrics")).text)

        assert await counts() == {}
        results = []
        for text in (fake_policy(), INVALID, fake_policy(small="b"), INVALID, fake_policy()):
            policy.write_text(text)
            results.append((await client.post("/admin/policy/reload")).status_code)
        assert results == [200, 422, 200, 422, 200]
        assert await counts() == {
            ("unchanged", "admin"): 1.0,
            ("rejected", "admin"): 2.0,
            ("applied", "admin"): 2.0,
        }
        info = (await client.get("/metrics")).text
        assert f'tiergate_policy_info{{hash="{hash_of(policy)}"}} 1.0' in info
        assert info.count("tiergate_policy_info{") == 1


async def test_a_reload_to_a_missing_gguf_is_rejected(tmp_path: Path) -> None:
    """A policy whose tiny backend names a GGUF that is not there is rejected on reload with
    the path (a 422, as any invalid policy), and the last good one keeps serving: it never
    goes live to answer its requests with 503."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    good_hash = hash_of(policy)
    missing = tmp_path / "missing.gguf"
    async with running(policy, Recorder()) as (client, _app):
        policy.write_text(
            fake_policy().replace(
                'small: {type: fake, model: small-model, script: [{reply: "small v1"}]}',
                f"small: {{type: tiny, model: {missing}}}",
            )
        )
        rejected = await client.post("/admin/policy/reload")
        still = await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert rejected.status_code == 422
    body = rejected.json()
    assert body["applied"] is False
    assert body["hash"] == good_hash
    (problem,) = body["problems"]
    assert problem.startswith(f"{policy}: backends.small.model: GGUF file not found: {missing}")
    assert still.status_code == 200, still.text
    assert still.headers["x-tiergate-policy"] == good_hash
    assert reply(still) == "small v1"


async def test_a_reload_to_a_try_longer_than_the_request_is_rejected(tmp_path: Path) -> None:
    """timeouts.per_try_s above timeouts.total_s is refused on reload (422, the one problem
    naming the field and the fix) and the last good policy keeps serving."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    good_hash = hash_of(policy)
    async with running(policy, Recorder()) as (client, _app):
        policy.write_text(fake_policy() + "timeouts: {total_s: 5, per_try_s: 30}\n")
        rejected = await client.post("/admin/policy/reload")
    assert rejected.status_code == 422
    body = rejected.json()
    assert (body["applied"], body["hash"]) == (False, good_hash)
    (problem,) = body["problems"]
    assert problem.startswith(f"{policy}: timeouts.per_try_s: 30 s is longer than timeouts.total_s")
    assert "lower per_try_s to 5 or less, or raise total_s" in problem

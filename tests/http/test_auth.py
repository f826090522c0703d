"""API keys: every route but /healthz needs one, admin routes need the admin key, and keys never
show up in a response or a log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.routing import BaseRoute, Route
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.preflight import ExposureError
from gateway.settings import Settings, key_id_for
from tests.http.helpers import TWO_TIERS, fakes, gateway

APP_KEY = "k-app-1111"
BARE_KEY = "k-bare-2222"
ADMIN_KEY = "k-admin-3333"
WRONG_KEY = "k-wrong-4444"
CLIENT_KEYS = f"app1:{APP_KEY},{BARE_KEY}"
KEYS = {"api_keys": CLIENT_KEYS, "admin_key": ADMIN_KEY}
SECRETS = (APP_KEY, BARE_KEY, ADMIN_KEY, WRONG_KEY)
CHAT_BODY = {"messages": [{"role": "user", "content": "hi"}]}
NOT_A_ROUTE = ("GET", "/no/such/route")
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"authorization": f"Bearer {WRONG_KEY}"},
    {"x-api-key": WRONG_KEY},
    {"authorization": "Basic"},
    {"authorization": f"Token {APP_KEY}"},
]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def served_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, read from ``app.routes`` so that a route added later
    is covered by these tests without anyone listing it."""
    found: list[tuple[str, str]] = []

    def add(route: BaseRoute, path: str) -> None:
        if not isinstance(route, Route):
            raise AssertionError(f"a route of a kind this test does not know: {route!r}")
        methods = sorted((route.methods or {"GET"}) - {"HEAD"})
        found.extend((method, path) for method in methods)

    for route in app.routes:
        # FastAPI keeps an included router as one entry that expands to its routes.
        expand = getattr(route, "effective_route_contexts", None)
        if expand is not None:
            for context in expand():
                add(context.original_route, context.path)
        else:
            add(route, getattr(route, "path", ""))
    return found


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(TWO_TIERS)
    return path


@pytest.fixture
async def keyed(policy_file: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    # With the API pages on (they are off by default), so that /docs is checked too.
    async with gateway(policy_file, backends=fakes("small", "big"), api_docs=True, **KEYS) as pair:
        yield pair


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body = json.dumps(CHAT_BODY).encode() if method == "POST" else None
    return await client.request(method, path, content=body, headers=headers)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_the_route_list_is_complete(keyed: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """The route walk sees the routes this file's other tests rely on (so it cannot go empty)."""
    paths = {path for _, path in served_routes(keyed[1])}
    expected = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/healthz", "/readyz"}
    expected |= {"/metrics", "/docs", "/openapi.json", "/admin/policy", "/admin/policy/explain"}
    assert expected <= paths


async def test_every_route_but_healthz_refuses_a_missing_or_wrong_key(
    keyed: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """Without a key, or with a wrong one, every route (and a path that does not exist) is a 401
    with an OpenAI error body; /healthz alone answers."""
    client, app = keyed
    routes = [*served_routes(app), NOT_A_ROUTE]
    checked = 0
    for method, path in routes:
        if path == "/healthz":
            continue
        for headers in BAD_CREDENTIALS:
            response = await call(client, method, path, headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            error = response.json()["error"]
            assert error["type"] == "authentication_error"
            assert "key" in error["message"]
            assert_no_secret(response.text)
            checked += 1
    assert checked >= 4 * 10


async def test_healthz_is_open(keyed: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """/healthz answers without a key, and with a wrong one."""
    client, _ = keyed
    for headers in ({}, bearer(WRONG_KEY)):
        response = await client.get("/healthz", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("headers", "key_id"),
    [
        (bearer(APP_KEY), "app1"),
        ({"x-api-key": APP_KEY}, "app1"),
        (bearer(BARE_KEY), key_id_for(BARE_KEY)),
        ({"x-api-key": BARE_KEY}, key_id_for(BARE_KEY)),
    ],
)
async def test_client_keys_work_on_v1(
    keyed: tuple[httpx.AsyncClient, FastAPI], headers: dict[str, str], key_id: str
) -> None:
    """A client key, as a bearer token or in x-api-key, is accepted on /v1/* and the request is
    logged under its key id, never the key."""
    client, _ = keyed
    with capture_logs() as logs:
        chat = await client.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)
        completion = await client.post("/v1/completions", json={"prompt": "hi"}, headers=headers)
        listed = await client.get("/v1/models", headers=headers)
        retrieved = await client.get("/v1/models/auto", headers=headers)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "small answer"
    assert completion.status_code == 200, completion.text
    assert listed.status_code == retrieved.status_code == 200
    requests = [e for e in logs if e["event"] == "request"]
    assert [e["key_id"] for e in requests] == [key_id, key_id]
    assert_no_secret(repr(logs))


async def test_client_keys_are_refused_on_admin_routes(
    keyed: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """A client key gets a 403 on every admin route: it is known, but not allowed there."""
    client, app = keyed
    admin = [(m, p) for m, p in served_routes(app) if p.startswith("/admin")]
    assert admin
    for method, path in admin:
        for key in (APP_KEY, BARE_KEY):
            response = await call(client, method, path, bearer(key))
            assert response.status_code == 403, (method, path, response.text)
            error = response.json()["error"]
            assert error["type"] == "permission_error"
            assert "admin key" in error["message"]


async def test_the_admin_key_works_on_admin_routes(
    keyed: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    """The admin key opens the admin routes."""
    client, _ = keyed
    shown = await client.get("/admin/policy", headers=bearer(ADMIN_KEY))
    assert shown.status_code == 200
    assert shown.json()["source"] == TWO_TIERS
    explained = await client.post(
        "/admin/policy/explain", json={"prompt": "hi"}, headers={"x-api-key": ADMIN_KEY}
    )
    assert explained.status_code == 200
    reloaded = await client.post("/admin/policy/reload", headers=bearer(ADMIN_KEY))
    assert reloaded.status_code == 200
    assert reloaded.json()["applied"] is False  # the file did not change
    for response in (shown, explained, reloaded):
        assert_no_secret(response.text)


async def test_admin_routes_are_off_without_an_admin_key(policy_file: Path) -> None:
    """With client keys but no admin key, admin routes are 403 saying so (the operator's log
    names the setting that opens them, the client's answer does not); client routes still
    work."""
    with capture_logs() as logs:
        async with gateway(policy_file, backends=fakes("small", "big"), api_keys=APP_KEY) as pair:
            client, app = pair
            admin = [(m, p) for m, p in served_routes(app) if p.startswith("/admin")]
            for method, path in admin:
                response = await call(client, method, path, bearer(APP_KEY))
                assert response.status_code == 403, (method, path, response.text)
                assert "no admin key" in response.json()["error"]["message"]
                assert "TIERGATE_" not in response.text
            ok = await client.post("/v1/chat/completions", json=CHAT_BODY, headers=bearer(APP_KEY))
            assert ok.status_code == 200
    refused = [e for e in logs if e["event"] == "admin_route_refused"]
    assert len(refused) == len(admin)
    assert all("TIERGATE_ADMIN_KEY" in e["why"] for e in refused)


async def test_no_keys_means_everything_is_open(policy_file: Path) -> None:
    """With no keys at all (loopback mode) no route asks for one, and the gateway says so at
    start."""
    with capture_logs() as logs:
        async with gateway(policy_file, backends=fakes("small", "big")) as (client, app):
            for method, path in [*served_routes(app), NOT_A_ROUTE]:
                response = await call(client, method, path, {})
                assert response.status_code not in (401, 403), (method, path, response.text)
            chat = await client.post("/v1/chat/completions", json=CHAT_BODY)
            assert chat.status_code == 200
            admin = await client.get("/admin/policy")
            assert admin.status_code == 200
    warnings = [e for e in logs if e["event"] == "no_api_keys"]
    assert len(warnings) == 1
    assert "loopback" in warnings[0]["detail"]
    assert "TIERGATE_API_KEYS" in warnings[0]["detail"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "gateway.example.com"])
def test_refuses_to_expose_without_keys(policy_file: Path, host: str) -> None:
    """On an address other than loopback, create_app without keys raises ExposureError that
    says how to fix it; with keys it builds."""
    with pytest.raises(ExposureError, match="TIERGATE_API_KEYS"):
        create_app(Settings(policy=policy_file, host=host), configure_logs=False)
    keyed = Settings(policy=policy_file, host=host, api_keys=SecretStr(APP_KEY))
    app = create_app(keyed, configure_logs=False)
    assert isinstance(app, FastAPI)


# The real log set-up is process-wide (and caches loggers), so it runs in a child process.
LOGGING_CHILD = """
import asyncio, json, sys
import httpx
from gateway.app import create_app
from gateway.settings import Settings

async def main():
    app = create_app(Settings(watch_policy=False, log_level="debug"), configure_logs=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for headers in json.loads(sys.argv[1]):
                chat = {"messages": [{"role": "user", "content": "hi"}]}
                await client.post("/v1/chat/completions", json=chat, headers=headers)
                await client.get("/admin/policy", headers=headers)
                await client.get("/readyz", headers=headers)

asyncio.run(main())
"""


def test_keys_never_reach_the_log_output(policy_file: Path) -> None:
    """With the real log set-up (JSON lines on stderr, keys from TIERGATE_* variables), requests
    with right, wrong and admin keys are logged by key id, and no key appears in the output."""
    attempts = [
        bearer(WRONG_KEY),
        {"x-api-key": WRONG_KEY},
        bearer(APP_KEY),
        {"x-api-key": BARE_KEY},
        bearer(ADMIN_KEY),
    ]
    env = {
        **os.environ,
        "TIERGATE_POLICY": str(policy_file),
        "TIERGATE_DATABASE_URL": f"sqlite:///{policy_file.parent / 'ledger.db'}",
        "TIERGATE_OUTBOX_PATH": str(policy_file.parent / "outbox.db"),
        "TIERGATE_API_KEYS": CLIENT_KEYS,
        "TIERGATE_ADMIN_KEY": ADMIN_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_CHILD, json.dumps(attempts)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert {line["event"] for line in lines} >= {"gateway_started", "request", "gateway_stopped"}
    requests = [line for line in lines if line["event"] == "request"]
    assert {r["key_id"] for r in requests} == {"app1", key_id_for(BARE_KEY), "admin"}
    assert_no_secret(done.stderr)
    assert_no_secret(done.stdout)

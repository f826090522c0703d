"""A replica that starts while the ledger's PostgreSQL does not answer (a pod rescheduled during
a database outage) has never read the virtual keys. It must not tell their holders that their
keys are invalid: it answers 503 ``keys_unavailable`` with ``Retry-After``, serves the bootstrap
keys, says so in ``/readyz`` (degraded, ``keys.virtual: unread``), and honours the virtual keys
as soon as the database answers, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from gateway.governance import store
from gateway.ledger.db import make_engine, upgrade
from tests.http.helpers import gateway
from tests.ledger.test_faults import POLICY
from tests.support import postgres
from tests.support.tcp_proxy import TcpProxy

ADMIN = "unread-admin-key-0123456789"
CLIENT = "unread-client-key-0123456789"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> Iterator[str]:
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_replica_started_without_its_database_answers_503_not_401(
    pg_url: str, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    try:
        virtual = store.create_key(engine, "made-elsewhere", store.LimitsIn()).key
    finally:
        engine.dispose()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    parts = urlsplit(pg_url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with TcpProxy(parts.hostname, parts.port) as proxy:
        user = f"{parts.username}@" if parts.username else ""
        proxied = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
        await proxy.cut()  # the database is away when the replica starts
        async with gateway(
            policy,
            database_url=SecretStr(proxied),
            admin_key=SecretStr(ADMIN),
            api_keys=SecretStr(f"app:{CLIENT}"),
            keys_refresh_s=0.2,
        ) as (http, _app):
            refused = await http.post("/v1/chat/completions", json=CHAT, headers=bearer(virtual))
            assert refused.status_code == 503, refused.text  # was 401 invalid_api_key
            error = refused.json()["error"]
            assert error["code"] == "keys_unavailable"
            assert "retry shortly" in error["message"]
            assert refused.headers["retry-after"] == "2"
            assert proxied not in refused.text
            assert str(proxy.port) not in refused.text
            # Anthropic's clients get it in their own shape.
            messages = await http.post(
                "/v1/messages",
                json={**CHAT, "max_tokens": 16},
                headers={"x-api-key": virtual},
            )
            assert messages.status_code == 503
            assert messages.json()["type"] == "error"

            served = await http.post("/v1/chat/completions", json=CHAT, headers=bearer(CLIENT))
            assert served.status_code == 200  # the bootstrap keys need no database
            ready = await http.get("/readyz", headers=bearer(ADMIN))
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["keys"] == {"virtual": "unread"}

            await proxy.restore()
            answers: list[int] = []

            async def works() -> bool:
                response = await http.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(virtual)
                )
                answers.append(response.status_code)
                return response.status_code == 200

            deadline = time.monotonic() + 15  # re-read at the next refresh that connects
            while not await works():
                assert time.monotonic() < deadline, answers
                await asyncio.sleep(0.05)
            assert set(answers) <= {503, 200}  # never a 401 on the way
            wrong = await http.post(
                "/v1/chat/completions", json=CHAT, headers=bearer("tg-not-a-key-at-all")
            )
            assert wrong.status_code == 401  # keys read: an unknown key is invalid again
            ready = await http.get("/readyz", headers=bearer(ADMIN))
            assert ready.json()["keys"] == {"virtual": "ok"}
            assert ready.json()["status"] == "ready"

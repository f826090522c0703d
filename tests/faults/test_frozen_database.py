"""A frozen PostgreSQL (connections accepted, bytes taken, no answer: a stopped server or a
dead link) behind a TCP proxy: requests keep being answered, the writer notices within its
insert deadline and sends rows to the outbox, ``/v1/feedback`` and ``/admin/report`` answer 503
within about two seconds instead of hanging, and once it thaws every answered request has
exactly one row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from gateway.http.ledger_calls import LEDGER_DEADLINE_S
from gateway.ledger.db import upgrade
from gateway.ledger.writer import LedgerWriter
from tests.http.helpers import gateway
from tests.ledger.test_faults import POLICY, ledger_rows
from tests.support import postgres
from tests.support.tcp_proxy import TcpProxy

ADMIN = "frozen-admin-key-0123456789"
CLIENT = "frozen-client-key-0123456789"
AUTH = {"authorization": f"Bearer {CLIENT}"}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
# The deadline, plus what an answer needs on a loaded 2-core machine; far below "hangs".
PROMPT_503_S = LEDGER_DEADLINE_S + 1.5


async def wait_until(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Poll ``check()`` (a condition on the writer's state, which emits no event) until true."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> Iterator[str]:
    with postgres.database(pg_cluster) as url:
        upgrade(url)
        yield url


async def test_a_frozen_database_is_noticed_and_reads_answer_503_promptly(
    pg_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    parts = urlsplit(pg_url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with TcpProxy(parts.hostname, parts.port) as proxy:
        user = f"{parts.username}@" if parts.username else ""
        proxied = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
        async with gateway(
            policy,
            database_url=SecretStr(proxied),
            admin_key=SecretStr(ADMIN),
            api_keys=SecretStr(f"app:{CLIENT}"),
        ) as (
            http,
            app,
        ):
            writer: LedgerWriter = app.state.ledger
            first = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
            assert first.status_code == 200
            rated = first.headers["x-request-id"]
            await writer.flush()

            await proxy.freeze()
            answered = [rated]
            for _ in range(6):
                answer = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
                assert answer.status_code == 200  # the frozen ledger does not stop the gateway
                answered.append(answer.headers["x-request-id"])

            started = time.perf_counter()
            feedback = await http.post(
                "/v1/feedback", json={"request_id": rated, "score": 1}, headers=AUTH
            )
            feedback_s = time.perf_counter() - started
            started = time.perf_counter()
            report = await http.get("/admin/report", headers={"authorization": f"Bearer {ADMIN}"})
            report_s = time.perf_counter() - started
            print(f"figures: feedback_s={feedback_s:.2f}, report_s={report_s:.2f}")
            for response, seconds in ((feedback, feedback_s), (report, report_s)):
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["code"] == "ledger_unavailable"
                assert "did not answer within" in error["message"]
                assert proxied not in response.text
                assert str(proxy.port) not in response.text
                assert response.headers["retry-after"] == "5"
                assert seconds < PROMPT_503_S

            # The writer gives up on the frozen insert and keeps the rows in the outbox.
            await wait_until(lambda: writer.outbox.size > 0, "rows in the outbox while frozen")

            await proxy.thaw()
            await wait_until(lambda: writer.outbox.size == 0, "the outbox replayed after thaw")
            await writer.flush()
            again = await http.post(
                "/v1/feedback", json={"request_id": rated, "score": 1}, headers=AUTH
            )
            assert again.status_code == 201
        rows = await asyncio.to_thread(ledger_rows, pg_url)
    ids = [rid for rid, _status in rows]
    assert sorted(ids) == sorted(answered)  # each answered request once, nothing else

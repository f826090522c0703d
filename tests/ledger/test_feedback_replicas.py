"""Feedback sent to one replica for an answer another replica gave a moment ago: the answer's
row is still in the other replica's writer batch, so the call waits for it to arrive rather than
answering 404 (SQLite file and PostgreSQL, two apps on one ledger)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine

from gateway.http import feedback as feedback_module
from gateway.ids import issued_at_s, request_id
from gateway.ledger import writer as writer_module
from gateway.ledger.db import upgrade
from gateway.ledger.feedback import request_owner
from gateway.ledger.models import FeedbackRow
from gateway.ledger.store import insert_batch
from tests.http.helpers import gateway

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "small answer"}]}
tiers:
  - {name: cheap, backends: [small]}
"""
KEYS = "alice:key-alice-1"
ALICE = {"authorization": "Bearer key-alice-1"}


def test_issued_at_reads_the_time_of_a_request_id() -> None:
    before = time.time()
    issued = issued_at_s(request_id())
    assert issued is not None
    assert before - 0.002 <= issued <= before + 5
    assert issued_at_s("nope") is None
    assert issued_at_s("9b2f6a52-1c1e-4c5e-8d1e-3f2b7c9a0e11") is None  # a UUIDv4


async def test_feedback_waits_for_an_answer_another_replica_is_writing(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(upgrade, ledger_url)
    # Replica A's ledger insert is held until replica B has looked once and found no row:
    # exactly the moment a client's feedback can reach B before A's batch is in.
    looked_and_missed = threading.Event()

    def held_insert(*args: Any, **kwargs: Any) -> Any:
        looked_and_missed.wait(timeout=30)
        return insert_batch(*args, **kwargs)

    def watched_owner(engine: Engine, rid: str) -> str | None:
        owner = request_owner(engine, rid)
        if owner is None:
            looked_and_missed.set()
        return owner

    monkeypatch.setattr(writer_module, "insert_batch", held_insert)
    monkeypatch.setattr(feedback_module, "request_owner", watched_owner)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "policy.yaml").write_text(POLICY)
    url = SecretStr(ledger_url)
    async with (
        gateway(tmp_path / "a" / "policy.yaml", database_url=url, api_keys=KEYS) as (
            client_a,
            _app_a,
        ),
        gateway(tmp_path / "b" / "policy.yaml", database_url=url, api_keys=KEYS) as (
            client_b,
            app_b,
        ),
    ):
        answer = await client_a.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hello"}]},
            headers=ALICE,
        )
        assert answer.status_code == 200
        rid = answer.headers["x-request-id"]
        rated = await client_b.post(
            "/v1/feedback", json={"request_id": rid, "score": 1.0}, headers=ALICE
        )
        assert looked_and_missed.is_set()  # B did look before A's row was in
        assert rated.status_code == 201, rated.text
        with app_b.state.ledger.engine.connect() as connection:
            kept = connection.execute(select(FeedbackRow.request_id, FeedbackRow.score)).all()
        assert [tuple(row) for row in kept] == [(rid, 1.0)]


async def test_an_unknown_recent_id_is_still_404_after_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A made-up id of the right shape is waited for (``ARRIVAL_WAIT_S``, shortened here),
    then refused naming the field; an id that is no request id is refused at once."""
    monkeypatch.setattr(feedback_module, "ARRIVAL_WAIT_S", 0.3)
    looks: list[str] = []

    def counted_owner(engine: Engine, rid: str) -> str | None:
        looks.append(rid)
        return request_owner(engine, rid)

    monkeypatch.setattr(feedback_module, "request_owner", counted_owner)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with gateway(policy, api_keys=KEYS) as (client, _app):
        recent = request_id()
        waited = await client.post(
            "/v1/feedback", json={"request_id": recent, "score": 0.0}, headers=ALICE
        )
        at_once = await client.post(
            "/v1/feedback", json={"request_id": "not-a-request", "score": 0.0}, headers=ALICE
        )
        future = str(uuid.UUID(int=request_id_int() + ((3600 * 1000) << 80)))
        from_the_future = await client.post(
            "/v1/feedback", json={"request_id": future, "score": 0.0}, headers=ALICE
        )
    for response in (waited, at_once, from_the_future):
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "request_id"
    assert looks.count(recent) > 1  # looked again while it might still arrive
    assert looks.count("not-a-request") == 1
    assert looks.count(future) == 1  # an hour ahead of every clock: made up, not waited for


def request_id_int() -> int:
    return uuid.UUID(request_id()).int

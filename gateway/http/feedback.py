"""``POST /v1/feedback``: a user's or an app's verdict on an answer, kept in the ledger.

Body: ``{"request_id": "<x-request-id of the answer>", "score": 0..1, "comment": "…"}``
(1 = good, 0 = bad; thumbs up/down are 1 and 0). A key may rate only the requests it made (the
admin key any); rating one again replaces its earlier verdict. Reports show the average per tier
and per canary arm, and a canary's ``min_quality`` guardrail counts it in split mode.

Each key may call it ``limits.feedback_per_key_per_minute`` times a minute (the policy's; every
replica's calls together when the gateway shares its limits through Redis): past that a 429 in
OpenAI's format with ``retry-after``. Bad bodies are refused before they count; unknown request
ids count (each costs the ledger a read).

An answer reaches the ledger from the replica that gave it, a batch at a time (within a second or
so), so feedback sent to another replica at once may find no row yet: for a request id made in
the last hour that is not in the ledger, the call looks again every 0.1 s for up to
``ARRIVAL_WAIT_S`` before it answers 404.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from functools import partial

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from gateway.errors import BadRequest, NotFound, TooManyRequests
from gateway.governance.rates import Limits, RateLimiter, Subject
from gateway.http.ledger_calls import ledger_call, ledger_deadline
from gateway.http.validation import validation_error
from gateway.ids import issued_at_s, request_id
from gateway.ledger.feedback import Feedback, insert_feedback, request_owner
from gateway.ledger.writer import LedgerWriter

router = APIRouter()

# How long feedback waits for the row of a request made a moment ago (another replica's writer
# lingers 0.2 s for a batch, then inserts it), and how often it looks.
ARRIVAL_WAIT_S = 3.0
ARRIVAL_POLL_S = 0.1
# A request id older than this that is not in the ledger will not arrive: no wait.
RECENT_S = 3600.0
# Replicas' clocks may differ this much: an id made "in the future" by more is made up.
CLOCK_SKEW_S = 5.0


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=36, description="the answer's x-request-id")
    # strict: ``true`` or ``"0.5"`` is a client's mistake, not a score; NaN and infinities are
    # refused as such (not as "less than or equal to 1")
    score: float = Field(
        ge=0.0, le=1.0, strict=True, allow_inf_nan=False, description="0 (bad) to 1 (good)"
    )
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("request_id", "comment")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        # PostgreSQL's text cannot hold NUL: refused here, the client's mistake, rather than
        # failing the insert (which read as the database being away: a 503).
        if value is not None and "\x00" in value:
            raise ValueError(
                "contains a NUL character (\\u0000), which cannot be stored; remove it"
            )
        return value


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    try:
        body = FeedbackIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_error(exc, FeedbackIn) from None
    ledger: LedgerWriter | None = request.app.state.ledger
    if ledger is None:
        raise BadRequest(
            "feedback is not kept: this gateway runs without its ledger (its operator can turn "
            "it on)"
        )
    state = request.scope.get("state", {})
    key_id: str = state.get("key_id", "-")
    # The admin key: its id and the operator's flag, never the id alone (settings refuse a
    # client key named "admin", and this holds should one get through)
    admin = key_id == "admin" and bool(state.get("operator"))
    if not admin:
        await _admit(request, key_id)
    owner = await _owner(ledger, body.request_id)
    if owner is None or (owner != key_id and not admin):
        raise NotFound(
            f"request_id: no request {body.request_id!r} made with this key is in the ledger; "
            f"use the x-request-id header of the answer",
            param="request_id",
            code="request_not_found",
        )
    async with ledger_deadline():
        row = Feedback(
            id=request_id(),
            request_id=body.request_id,
            ts=datetime.now(UTC),
            key_id=key_id,
            score=body.score,
            comment=body.comment,
        )
        replaced = await ledger_call(partial(insert_feedback, ledger.engine, row))
    payload = {
        "id": row.id,
        "request_id": row.request_id,
        "score": row.score,
        "stored": True,
        "replaced": replaced,
    }
    return Response(orjson.dumps(payload), status_code=201, media_type="application/json")


async def _owner(ledger: LedgerWriter, rid: str) -> str | None:
    """The key id that made request ``rid``, or None. This replica's own answers are flushed
    first; one made a moment ago elsewhere is waited for (``ARRIVAL_WAIT_S``)."""
    async with ledger_deadline():
        await ledger.flush()  # the request being rated may have been answered a moment ago
        owner = await ledger_call(partial(request_owner, ledger.engine, rid))
    issued = issued_at_s(rid)
    age = None if issued is None else time.time() - issued
    # a made-up id from the future (past a clock skew) or from long ago will not arrive
    if owner is not None or age is None or not -CLOCK_SKEW_S <= age <= RECENT_S:
        return owner
    deadline = time.monotonic() + ARRIVAL_WAIT_S
    while owner is None and time.monotonic() < deadline:
        await asyncio.sleep(ARRIVAL_POLL_S)
        async with ledger_deadline():
            owner = await ledger_call(partial(request_owner, ledger.engine, rid))
    return owner


async def _admit(request: Request, key_id: str) -> None:
    """Count this call against the key's feedback limit; a 429 naming the limit past it."""
    per_minute = request.app.state.runtime.active.policy.limits.feedback_per_key_per_minute
    if per_minute is None:
        return
    limiter: RateLimiter = request.app.state.feedback_rates
    verdict = await limiter.admit([Subject("key", key_id, Limits(rpm=per_minute))], 0)
    if verdict.allowed:
        return
    wait = max(1.0, verdict.retry_after_s or 0.0)
    raise TooManyRequests(
        f"feedback rate limit reached: this key may send {per_minute} feedback a minute "
        f"(policy limits.feedback_per_key_per_minute); retry in {wait:.0f} s",
        code="feedback_rate_limit_exceeded",
        retry_after=wait,
    )

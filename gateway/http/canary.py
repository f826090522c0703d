"""Admin endpoints of the canary (admin key): its state and figures, promote, rollback,
restart."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from gateway.canary.controller import CanaryController
from gateway.canary.events import CanaryConflict
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.http.validation import validation_error

router = APIRouter()


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000)


def _ledger_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the ledger database is unreachable: the canary's figures and decisions live there; "
        "try again when it answers",
        code="ledger_unavailable",
    )


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _controller(request: Request) -> CanaryController:
    controller: CanaryController = request.app.state.canary
    return controller


async def _reason(request: Request) -> str:
    raw = await request.body()
    if not raw.strip():
        return ""
    try:
        return DecisionIn.model_validate_json(raw).reason
    except ValidationError as exc:
        raise validation_error(exc, DecisionIn) from None


@router.get("/admin/canary")
async def canary_status(request: Request, evaluate: bool = False) -> Response:
    """The canary's state, figures per arm and recent decisions; ``?evaluate=true`` checks the
    guardrails first (and acts on them)."""
    controller = _controller(request)
    try:
        if evaluate:
            await controller.evaluate()
        return _json(await controller.status())
    except SQLAlchemyError:
        raise _ledger_down() from None


@router.post("/admin/canary/promote")
async def canary_promote(request: Request) -> Response:
    return await _decide(request, "promote")


@router.post("/admin/canary/rollback")
async def canary_rollback(request: Request) -> Response:
    return await _decide(request, "rollback")


@router.post("/admin/canary/restart")
async def canary_restart(request: Request) -> Response:
    return await _decide(request, "restart")


async def _decide(request: Request, action: Literal["promote", "rollback", "restart"]) -> Response:
    """A manual decision, recorded with the admin's reason."""
    reason = await _reason(request)
    controller = _controller(request)
    decide = {
        "promote": controller.promote,
        "rollback": controller.rollback,
        "restart": controller.restart,
    }[action]
    try:
        event = await decide("admin", reason)
    except CanaryConflict as exc:
        raise Conflict(str(exc), code="canary_conflict") from None
    except SQLAlchemyError:
        raise _ledger_down() from None
    return _json(event.as_dict())

"""``GET /v1/models``: the policy's routes and backends, as OpenAI's model list."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.routing.runtime import Runtime

router = APIRouter()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/v1/models")
async def models(request: Request) -> Response:
    active = _runtime(request).active
    policy = active.policy
    data: list[dict[str, Any]] = []
    for name, route in policy.routes.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "tiergate",
                "tiergate": {
                    "kind": "route",
                    "default": name == policy.default_route,
                    "tiers": list(route.tiers),
                    "fixed_tier": route.fixed_tier,
                    "fallback": route.fallback,
                },
            }
        )
    for name, config in policy.backends.items():
        if name in policy.routes:
            continue
        state = active.pool.get(name)
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "tiergate",
                "tiergate": {
                    "kind": "backend",
                    "type": config.type,
                    "model": config.model,
                    "tier": policy.tier_of(name),
                    "available": state is not None and state.is_up(),
                },
            }
        )
    return _json({"object": "list", "data": data})

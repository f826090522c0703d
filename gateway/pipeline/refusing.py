"""Refusals before any backend is chosen: a ``model`` the policy does not know, and a route the
caller's key may not use, as ``Refused`` in the request path's words. ``Pipeline.handle`` plans
inside ``refusing``; an edge that answers with no backend (``count_tokens``) asks
``check_model``, so it refuses exactly what a request for the same model and key would."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from gateway.errors import BadRequest, GatewayError
from gateway.governance.grants import Grant
from gateway.ids import request_id
from gateway.pipeline.answers import Receipt, Refused
from gateway.policy import Policy, Route, UnknownRoute


@contextlib.contextmanager
def refusing(receipt: Receipt, grant: Grant | None = None) -> Iterator[None]:
    """Planning's refusals (an unknown route, needs no backend meets) as ``Refused``. A key
    limited to some routes is told those, not every name of the gateway."""
    try:
        yield
    except UnknownRoute as exc:
        if grant is not None and grant.routes is not None:
            exc = UnknownRoute(exc.name, [name for name in exc.valid if name in grant.routes])
        error = BadRequest(str(exc), param="model", code="model_not_found")
        raise Refused(error, receipt) from None
    except GatewayError as exc:
        raise Refused(exc, receipt) from None


def check_model(policy: Policy, model: str | None, grant: Grant | None) -> None:
    """Raise ``Refused`` for a ``model`` that names nothing in ``policy`` or a route (or pinned
    backend) ``grant`` may not use, as a request naming it would be refused."""
    receipt = Receipt(request_id=request_id(), policy=policy.hash)
    with refusing(receipt, grant):
        target = policy.route_for(model)
    route = target.name if isinstance(target, Route) else target
    refusal = grant.refusal(route) if grant is not None else None
    if refusal is not None:
        raise Refused(refusal, dataclasses.replace(receipt, route=route))

"""Operations endpoints: ``/healthz`` (no key), ``/readyz`` (each backend's state) and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import Forbidden
from gateway.governance.book import KeyBook
from gateway.governance.gate import Governor
from gateway.ledger.capacity import OutboxReading
from gateway.ledger.schema_compat import SchemaState
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.routing.runtime import LastReload, Runtime

router = APIRouter()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


HIDDEN = (
    "backend, cache and governance reasons are shown to operators only: ask with the admin key, "
    "on the ops port, or in loopback-only mode"
)


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Each backend's state, the cache's and governance's (Redis asked now). 200 while the
    default route has a usable backend and the ledger's outbox is not full, else 503
    (``causes``: ``no_usable_backend``, ``ledger_outbox_full``); "degraded" (still 200) while
    some candidate is not usable, the cache goes without Redis, the limits are kept per
    process, the outbox is past 80 % of its bound, the ledger's schema turned out unusable after
    a start the database did not answer (rows wait in the outbox), or the last policy reload was
    rejected (``policy_reload``: the last good policy serves, not the file).

    The reasons (``detail``: an Ollama's address, a Redis error, which variable enables a
    backend) go to operators only (``operator`` set by ``ApiKeys``); a client key, or a probe on
    the main port with ``TIERGATE_OPEN_OPS``, sees the same states without them."""
    operator = bool(request.scope.get("state", {}).get("operator"))
    runtime = _runtime(request)
    active = runtime.active
    policy = active.policy
    backends = {}
    for state in active.pool.states():
        reason = state.unavailable_reason()
        backends[state.name] = {
            "tier": policy.tier_of(state.name),
            "usable": state.is_up() and state.breaker.state() != "open",
            "healthy": state.healthy,
            "warm": state.warm,
            "breaker": state.breaker.state(),
            "detail": (reason or state.health_detail) if operator else None,
        }
    # The backends a request to the default route may be dispatched to (routing's own
    # candidates, over every tier its score can choose), not every backend of its tiers: a
    # fixed tier with no fallback never uses the others.
    candidates = [c.backend for c in policy.reachable(policy.route_for(None))]
    usable = [n for n in candidates if backends.get(n, {}).get("usable")]
    all_usable = len(usable) == len(candidates)
    status = "ready" if all_usable else ("degraded" if usable else "unavailable")
    store = request.app.state.cache.store
    governor: Governor = request.app.state.governor
    # Redis asked now (both at once, each bounded): not what the last request happened to see
    (cache_state, cache_detail), limits = await asyncio.gather(store.check(), governor.check())
    keys: KeyBook = request.app.state.keys
    keys_state = keys.state()
    if status == "ready" and (
        "degraded" in (cache_state, limits.state) or keys_state in ("stale", "unread")
    ):
        # Still serving: uncached, with limits kept per process, or with the virtual keys
        # read last (or, unread, with the bootstrap and admin keys only).
        status = "degraded"
    writer: LedgerWriter | None = request.app.state.ledger
    outbox = writer.capacity.reading() if writer is not None else None
    if outbox is not None and outbox.state == "full":
        # Its rows would have nowhere to go: requests are refused here, send them elsewhere.
        status = "unavailable"
    elif status == "ready" and outbox is not None and outbox.state == "filling":
        status = "degraded"
    schema = writer.schema if writer is not None else None
    if status == "ready" and schema is not None and not schema.usable:
        # Found so after a start the database did not answer: rows wait in the outbox until
        # `tiergate db upgrade` (or the right image) fixes it.
        status = "degraded"
    reload = runtime.last_reload
    if status == "ready" and reload is not None and reload.outcome == "rejected":
        # Serving, but not what the file says: the last good policy, until the file is fixed.
        status = "degraded"
    runtime.refresh_gauges()
    body: dict[str, Any] = {
        "status": status,
        "policy": policy.hash,
        "policy_reload": _reload(reload, operator),
        "default_route": {"name": policy.default_route, "candidates": candidates},
        "backends": backends,
        "cache": {
            "store": store.kind,
            "state": cache_state,
            "detail": cache_detail if operator else None,
        },
        "governance": {
            "store": limits.store,
            "state": limits.state,
            "limits": limits.limits,
            "detail": limits.detail if operator else None,
        },
        "keys": {"virtual": keys_state},
        "ledger": {**_ledger(request, operator), "outbox": _outbox(outbox)},
    }
    if status == "unavailable":
        # What keeps it out of service, for a person reading the probe's failure.
        body["causes"] = [
            *([] if usable else ["no_usable_backend"]),
            *(["ledger_outbox_full"] if outbox is not None and outbox.state == "full" else []),
        ]
    if not operator:
        body["detail"] = HIDDEN
    return _json(body, 503 if status == "unavailable" else 200)


def _reload(reload: LastReload | None, operator: bool) -> dict[str, Any] | None:
    """The latest reload attempt (None: none since start); its problems (the file's path, its
    fields) go to operators only, as the other reasons do."""
    if reload is None:
        return None
    return {
        "result": reload.outcome,
        "trigger": reload.result.trigger,
        "at": reload.at.isoformat(),
        "problems": list(reload.result.problems) if operator else None,
    }


UNCHECKED = (
    "the ledger database has not answered since this gateway started (log line "
    "`ledger_db_unreachable` has the error), so its schema is not checked yet; rows wait in the "
    "local outbox: make TIERGATE_DATABASE_URL reachable, and the schema is checked (then the "
    "rows written, or kept until `tiergate db upgrade` if it is behind; the embedded SQLite is "
    "upgraded in place) without a restart"
)
# After ``describe()`` of a schema found unusable once the database answered (the gateway
# serves): what happens to the rows meanwhile, and that fixing the schema is enough.
WAITING = (
    "; meanwhile the rows wait in the local outbox (none refused), and are written by "
    "themselves once the schema is right: no restart"
)


def _ledger(request: Request, operator: bool) -> dict[str, str | None]:
    """The ledger schema as checked at start, or since (a start the database did not answer is
    checked once it does): ``at_head``, ``ahead_compatible`` (a newer tiergate migrated it and
    records this one as compatible: a rolling update), ``unchecked`` (the database has not
    answered yet), ``empty``/``behind``/``ahead_incompatible`` (found so after such a start:
    rows wait in the outbox until it is fixed) or ``off``."""
    writer: LedgerWriter | None = request.app.state.ledger
    if writer is None:
        return {"schema": "off", "detail": None}
    schema: SchemaState | None = writer.schema
    if schema is None:
        return {"schema": "unchecked", "detail": UNCHECKED if operator else None}
    detail = schema.describe() + ("" if schema.usable else WAITING)
    return {"schema": str(schema.verdict), "detail": detail if operator else None}


def _outbox(reading: OutboxReading | None) -> dict[str, Any] | None:
    """The local outbox against its bound: ``ok``, ``filling`` (past 80 %: the database has
    been away a while) or ``full`` (new requests refused: 503 ``ledger_outbox_full``); its rows
    waiting, and those the database refused (``rejected``: ``tiergate outbox list``)."""
    if reading is None:
        return None
    return {
        "state": reading.state,
        "rows": reading.rows,
        "rejected": reading.rejected,
        "bytes": reading.used_bytes,
        "max_bytes": reading.max_bytes,
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text. With key labels on it holds every key's tokens and spend: then a client
    key (another tenant) is refused, and the admin key, the ops port or an open ops path serve
    it."""
    registry: Metrics = request.app.state.metrics
    state = request.scope.get("state", {})
    if registry.key_labels and "key_id" in state and not state.get("operator"):
        raise Forbidden(
            "/metrics holds every key's spend on this gateway: read it with the admin key or "
            "on the gateway's ops port",
            code="operator_only",
        )
    _runtime(request).refresh_gauges()
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

"""The gateway process's composition root. ``Services`` are what the request path runs on —
backends (through the runtime), ledger, caches, canary, metrics and the pipeline over them —
opened at start and closed at shutdown; ``create_app(settings)`` is the ASGI app over them.
Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from dataclasses import dataclass

import structlog
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from adapters import load_backend
from adapters.remote.loader import load_litellm
from gateway.cache.service import CacheService
from gateway.cache.store import MemoryStore, RedisStore, Store
from gateway.canary.controller import CanaryController
from gateway.canary.counters import CanaryMetrics
from gateway.governance.book import KeyBook
from gateway.governance.budgets import MemoryBudgets
from gateway.governance.gate import Governor
from gateway.governance.rates import RateLimiter
from gateway.governance.recovered import charge_recovered
from gateway.governance.remote import RemoteGate
from gateway.http.admin import Peers
from gateway.http.asgi import asgi_app
from gateway.ledger.capacity import OutboxBound
from gateway.ledger.db import display_url, ensure_schema, make_engine, recheck_schema
from gateway.ledger.journal import Journal
from gateway.ledger.journal_recovery import Recovered, recover_rows
from gateway.ledger.outbox import Outbox
from gateway.ledger.schema_compat import SchemaState, SchemaVerdict
from gateway.ledger.writer import LedgerWriter
from gateway.log import configure_logging
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.preflight import check_exposure
from gateway.routing.accounting import Accountant
from gateway.routing.judging import LabelSampler
from gateway.routing.pool import BackendFactory
from gateway.routing.runtime import Runtime
from gateway.scoring.tokens import warm_up
from gateway.settings import Settings
from gateway.tracing import Tracing, open_tracing

log = structlog.get_logger("tiergate.app")

# A ledger insert that takes longer than this fails, and its rows go to the outbox.
WRITER_STATEMENT_TIMEOUT_MS = 15_000
# The feedback limit's Redis counters: ``tiergate:fb:key:<key id>:r:<window>`` (ids only).
FEEDBACK_RATES_PREFIX = "tiergate:fb:"


@dataclass(frozen=True, slots=True)
class Services:
    """What one gateway process runs on, from start to shutdown."""

    metrics: Metrics
    runtime: Runtime
    ledger: LedgerWriter | None
    accountant: Accountant
    cache: CacheService
    canary: CanaryController
    pipeline: Pipeline
    keys: KeyBook
    governor: Governor
    # ``POST /v1/feedback``'s per-key limit: shared through Redis like the keys' own limits
    feedback_rates: RateLimiter

    @classmethod
    async def open(
        cls, settings: Settings, backend_factory: BackendFactory, keys: KeyBook | None = None
    ) -> Services:
        if keys is None:
            keys = key_book(settings)
        metrics = Metrics(key_labels=settings.metrics_key_labels)
        runtime = Runtime(settings.policy, metrics, factory=backend_factory)
        ledger, recovered = (
            await open_ledger(settings, metrics)
            if settings.ledger
            else (None, Recovered([], frozenset()))
        )
        if ledger is not None:
            runtime.use_ledger(ledger.engine)  # the adaptive scorer's labels live there
        await asyncio.to_thread(warm_up)
        if runtime.active.pool.has_remote():
            # litellm's map gives the remote models' context windows and prices: read before the
            # first request, not after (a prompt judged against a default window until then).
            await asyncio.to_thread(load_litellm)
        accountant = Accountant(metrics, ledger)
        cache = CacheService(open_store(settings), metrics)
        canary = CanaryController(
            runtime,
            CanaryMetrics(metrics.registry),
            engine=ledger.engine if ledger else None,
            record=ledger.record if ledger else None,
            flush=ledger.flush if ledger else None,
        )
        labels = LabelSampler(metrics.registry, ledger.record, ledger.engine) if ledger else None
        governor = open_governor(settings, ledger.engine if ledger else None)
        if ledger is not None and ledger.journal is not None:
            governor.track(ledger.journal)  # an answered request stays until its cost landed
        if ledger is not None and recovered.rows:
            # What a killed process's requests had cost when it died: into the budgets.
            await charge_recovered(governor, ledger.engine, recovered)
        pipeline = Pipeline(runtime, accountant, cache, canary, labels, governor)
        feedback_rates = RateLimiter.from_settings(settings, prefix=FEEDBACK_RATES_PREFIX)
        services = cls(
            metrics,
            runtime,
            ledger,
            accountant,
            cache,
            canary,
            pipeline,
            keys,
            governor,
            feedback_rates,
        )
        if ledger is not None:
            await keys.refresh(ledger.engine)  # the virtual keys, before the first request
            keys.start(ledger.engine, settings.keys_refresh_s)
        runtime.start(watch=settings.watch_policy)
        await canary.start()
        _install_sighup(runtime)
        if keys.open:
            log.warning(
                "no_api_keys",
                detail=f"no API keys configured: serving on {settings.host} (loopback) only, "
                "every route open. Set TIERGATE_API_KEYS to require keys.",
            )
        # What start-up made (policy, pools, imported modules, litellm's maps) lives as long as
        # the process: out of the collector's generations, so a full collection no longer walks
        # a few hundred thousand objects that can never be garbage (15–20% of the CPU at c=32,
        # bench/README.md "Garbage collection").
        gc.freeze()
        log.info(
            "gateway_started",
            policy=runtime.active.policy.hash,
            host=settings.host,
            ledger=display_url(settings.ledger_url()) if settings.ledger else "off",
        )
        return services

    async def aclose(self) -> None:
        _remove_sighup()
        await self.keys.aclose()
        await self.canary.aclose()
        if self.pipeline.labels is not None:
            await self.pipeline.labels.aclose()
        await self.governor.aclose()  # budgets reconciled before the ledger closes
        await self.feedback_rates.aclose()
        if self.ledger is not None:
            await self.ledger.aclose()  # after the server drained its requests: rows written
            # Its connections closed now, not whenever the collector gets to them.
            await asyncio.to_thread(self.ledger.engine.dispose)
        await self.cache.aclose()
        await self.runtime.aclose()
        self.metrics.close()
        log.info("gateway_stopped")


def create_app(
    settings: Settings,
    *,
    backend_factory: BackendFactory = load_backend,
    configure_logs: bool = True,
    tracing: Tracing | None = None,
    peers: Peers | None = None,
) -> FastAPI:
    """Build the gateway. ``backend_factory`` lets tests put shipped fakes behind any name;
    ``tracing`` defaults to what the ``OTEL_*`` variables ask for (usually nothing); ``peers``
    are the other workers of ``serve --workers N`` (``gateway.workers``)."""
    check_exposure(settings)
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format, settings.secrets())
    if tracing is None:
        tracing = open_tracing(settings.trace_content)
    keys = key_book(settings)
    return asgi_app(
        settings, keys, lambda: Services.open(settings, backend_factory, keys), tracing, peers
    )


def key_book(settings: Settings) -> KeyBook:
    """The keys the gateway accepts: the bootstrap ones now, the virtual ones once the ledger
    database is open."""
    admin = settings.admin_key.get_secret_value() if settings.admin_key else None
    return KeyBook(settings.client_keys(), admin)


def open_governor(settings: Settings, engine: Engine | None) -> Governor:
    """Budgets and rate limits shared through Redis when TIERGATE_REDIS_URL is set (decided
    together, one call per event-loop turn; this process's own counters while Redis is away),
    else kept by this process."""
    if settings.redis_url is None:
        return Governor(MemoryBudgets(), RateLimiter.from_settings(settings), engine)
    timeout_s = settings.governance_timeout_ms / 1000.0
    remote = RemoteGate(
        settings.redis_url.get_secret_value(),
        timeout_s=timeout_s,
        # a connection is made rarely, and a busy event loop can hold a connect's reply past a
        # tight bound: a burst would then read as an outage
        connect_timeout_s=max(2.0, timeout_s),
        leases=settings.governance_leases,
    )
    return Governor(MemoryBudgets(), RateLimiter(None), engine, remote=remote)


async def open_ledger(settings: Settings, metrics: Metrics) -> tuple[LedgerWriter, Recovered]:
    """The ledger's engine (schema checked or, for the embedded SQLite, upgraded) and writer,
    and the rows recovered from the journals of processes that died (now in the outbox). The
    writer holds the schema's state (checked again once the database answers, when it did not
    at start)."""
    url = settings.ledger_url()
    engine = make_engine(url, statement_timeout_ms=WRITER_STATEMENT_TIMEOUT_MS)
    schema: SchemaState | None = None
    try:
        schema = await asyncio.to_thread(ensure_schema, url, engine)
    except OperationalError as exc:
        # Unreachable now: serve anyway, rows go to the outbox until the database answers.
        log.error(
            "ledger_db_unreachable",
            error=str(exc).splitlines()[0][:300],
            detail="starting anyway; ledger rows go to the local outbox",
        )
    outbox = await asyncio.to_thread(Outbox, settings.outbox_path)
    # Rows a killed process journaled but never wrote: into the outbox, replayed from there.
    recovered = await asyncio.to_thread(recover_rows, settings.journal_path(), outbox)
    journal = None
    if settings.journal:
        journal = await asyncio.to_thread(
            Journal, settings.journal_path(), sync=settings.journal_sync
        )
    writer = LedgerWriter(
        engine,
        outbox,
        metrics,
        journal=journal,
        insert_timeout_s=settings.ledger_insert_timeout_s,
        outbox_bound=OutboxBound(settings.outbox_max_bytes),
        schema=schema,
        # unchecked at start: checked (the same way) once the database answers, before any row
        schema_check=functools.partial(recheck_schema, url, engine),
    )
    writer.start()
    if outbox.size:
        log.warning("ledger_outbox_pending", rows=outbox.size, path=str(outbox.path))
    if schema is not None and schema.verdict != SchemaVerdict.AT_HEAD:
        log.warning("ledger_schema_ahead", detail=schema.describe())
    return writer, recovered


def open_store(settings: Settings) -> Store:
    """Redis when TIERGATE_REDIS_URL is set, else the in-process store."""
    if settings.redis_url is None:
        return MemoryStore()
    return RedisStore(
        settings.redis_url.get_secret_value(), timeout_s=settings.redis_timeout_ms / 1000.0
    )


def _install_sighup(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()

    def on_sighup() -> None:
        runtime.spawn(runtime.reload("sighup"), "sighup-reload")

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)


def _remove_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def app_from_env() -> FastAPI:
    """The app built from ``TIERGATE_*`` settings: the factory uvicorn's worker processes
    import (``uvicorn --factory gateway.app:app_from_env``)."""
    return create_app(Settings())

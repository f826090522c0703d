"""The pipeline's check on the ledger's backlog: while the database is unreachable and the local
outbox is full (``gateway.ledger.capacity``), a new request is refused before anything is spent
on it, since its row would have nowhere safe to go. Requests already admitted are not touched:
their rows go to the outbox past its bound (a soft bound for them), none is lost."""

from __future__ import annotations

from gateway.errors import ServiceUnavailable
from gateway.ledger.capacity import RETRY_AFTER_S
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.pipeline.answers import Receipt, Refused
from gateway.routing.accounting import Outcome

OUTBOX_FULL = "ledger_outbox_full"


def check_backlog(
    ledger: LedgerWriter | None, metrics: Metrics, outcome: Outcome, route: str
) -> None:
    """Raise ``Refused`` (503 ``ledger_outbox_full``, ``Retry-After``) while the outbox is full;
    counted in ``tiergate_ledger_outbox_refused_total``."""
    if ledger is None or not ledger.capacity.full:
        return
    metrics.ledger_outbox_refused.inc()
    error = ServiceUnavailable(
        "the ledger is unavailable and this gateway's local outbox for its rows is full, so it "
        "takes no new requests until the ledger database answers again (nothing was sent to a "
        "backend and nothing was charged): retry shortly; other replicas may serve it",
        code=OUTBOX_FULL,
        retry_after=RETRY_AFTER_S,
    )
    receipt = Receipt(request_id=outcome.rid, policy=outcome.policy_hash, route=route)
    raise Refused(error, receipt)

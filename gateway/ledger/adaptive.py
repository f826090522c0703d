"""The adaptive scorer's tables: request embeddings waiting for feedback, and the labels every
replica learns from. Embeddings and numbers only: no prompt text is ever written here.

* ``adaptive_samples``: written with the ledger row (same transaction) for each request the
  adaptive scorer routed to a tier below the route's strongest, when the policy stores
  embeddings, with the tenant that asked (its ``owner``); pruned once older than the
  policy's ``sample_ttl_h``.
* ``adaptive_labels``: one row per label. A feedback on a sampled request copies its embedding
  and its owner (the tenant that asked: ``team:<team>`` or ``key:<key id>``) here with
  ``label = 1 - feedback score`` (in the feedback's transaction), so the sample can be pruned
  and the label stays; the owner keeps one tenant's ratings from moving another's routing. A
  request has one feedback label: a later verdict deletes the earlier label and adds its own
  (a new id, so replicas read it and drop the label it replaces: ``StoredLabel.slot``). A
  judged sample (``gateway.routing.judging``: a cheaper tier's answer graded against the next
  stronger tier's) adds a row with source ``judge`` and no owner: the gateway's own verdict,
  which every request learns from. Replicas read the rows past the last id they saw.

Also the ``canary_arm`` values of the ledger rows the gateway writes for its own calls:
``LABEL_ARMS`` (a judged sample's) and ``OVERHEAD_ARMS`` (every background call's, the canary's
shadow and judge calls included), which the savings report and the spend of keys and teams leave
out of client traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.ledger.entry import LedgerEntry, SampledEntry
from gateway.ledger.models import AdaptiveLabelRow, AdaptiveSampleRow
from gateway.scoring.adaptive import feedback_label, owner_scope

FEEDBACK = "feedback"
# A feedback label of no tenant (its request is gone, or no owner was recorded): it counts only
# where a policy shares feedback. Migration 0011 writes the same word.
UNKNOWN_OWNER = "unknown"
JUDGE = "judge"
# The ledger rows of a judged sample's calls (their canary_arm): the stronger tier's answer and
# the judge's grading. Not client traffic: the savings report keeps them apart.
LABEL_STRONG = "label_strong"
LABEL_JUDGE = "label_judge"
LABEL_ARMS: tuple[str, ...] = (LABEL_STRONG, LABEL_JUDGE)
# The rows of calls the gateway makes on its own after a client's answer (gateway.routing.
# background): a canary's shadow and judge calls, the adaptive scorer's judged samples. Routing's
# overhead, not client traffic: the savings report and the spend of keys and teams leave them out.
OVERHEAD_ARMS: tuple[str, ...] = ("shadow", "judge", *LABEL_ARMS)


@dataclass(frozen=True, slots=True)
class StoredLabel:
    id: int
    label: float
    embedding: bytes
    owner: str | None = None  # a feedback label's tenant; None: shared (a judge's)
    # A feedback label's request id: a newer label of the same slot replaces it (a re-vote).
    # None: a label nothing replaces (a judge's).
    slot: str | None = None


def insert_samples(connection: Connection, entries: Sequence[LedgerEntry]) -> None:
    """The embeddings of the sampled entries among ``entries`` (idempotent by request id)."""
    rows = [
        {
            "request_id": e.id,
            "ts": e.ts,
            "tier": e.tier[:64],
            "base_score": e.base_score,
            "embedding": e.embedding,
            "owner": owner_scope(e.key_id, e.team),
        }
        for e in entries
        if isinstance(e, SampledEntry) and e.embedding
    ]
    if not rows:
        return
    dialect = connection.dialect.name
    insert_of: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_of(AdaptiveSampleRow).on_conflict_do_nothing(index_elements=["request_id"])
    connection.execute(statement, rows)


def label_from_feedback(
    connection: Connection, request_id: str, ts: datetime, quality: float
) -> bool:
    """Turn a feedback on ``request_id`` into its label when the request was sampled (answered
    by a cheaper tier under an adaptive policy) or labelled before (a re-vote: the earlier
    label's embedding serves once the sample is pruned), in place of its earlier feedback
    label; returns whether it was."""
    label = feedback_label(quality)
    earlier = (
        AdaptiveLabelRow.request_id == request_id,
        AdaptiveLabelRow.source == FEEDBACK,
    )
    columns = (
        literal(ts, AdaptiveLabelRow.ts.type),
        literal(FEEDBACK, AdaptiveLabelRow.source.type),
        literal(label, AdaptiveLabelRow.label.type),
    )
    sampled = select(
        AdaptiveSampleRow.request_id, *columns, AdaptiveSampleRow.embedding, AdaptiveSampleRow.owner
    ).where(AdaptiveSampleRow.request_id == request_id)
    relabelled = (
        select(
            AdaptiveLabelRow.request_id,
            *columns,
            AdaptiveLabelRow.embedding,
            AdaptiveLabelRow.owner,
        )
        .where(*earlier)
        .order_by(AdaptiveLabelRow.id.desc())
        .limit(1)
    )
    names = ["request_id", "ts", "source", "label", "embedding", "owner"]
    # The new label first, then the earlier ones go: SQLite hands a new row the highest id + 1,
    # so deleting the newest label first would give the replacement the id it had, which the
    # replicas that read it skip as seen. Deleted second, it is never the highest.
    # (RETURNING, as psycopg gives no row count for an INSERT … SELECT: -1)
    inserted = connection.execute(
        insert(AdaptiveLabelRow).from_select(names, sampled).returning(AdaptiveLabelRow.id)
    ).first()
    if inserted is None:
        inserted = connection.execute(
            insert(AdaptiveLabelRow).from_select(names, relabelled).returning(AdaptiveLabelRow.id)
        ).first()
    if inserted is None:
        return False
    connection.execute(delete(AdaptiveLabelRow).where(*earlier, AdaptiveLabelRow.id != inserted.id))
    return True


def insert_label(
    engine: Engine, request_id: str, ts: datetime, source: str, label: float, embedding: bytes
) -> None:
    """One label on a request's embedding (a judged sample's, say), shared by every request."""
    row = {
        "request_id": request_id,
        "ts": ts,
        "source": source,
        "label": min(1.0, max(0.0, label)),
        "embedding": embedding,
    }
    with engine.begin() as connection:
        connection.execute(insert(AdaptiveLabelRow), [row])


def read_labels(
    engine: Engine, after: int, also: Sequence[int] = (), limit: int = 5000
) -> list[StoredLabel]:
    """Labels with an id above ``after`` (oldest first, at most ``limit``), and those of the ids
    in ``also`` (gaps an earlier read saw: a transaction that had not committed yet)."""
    where = AdaptiveLabelRow.id > after
    if also:
        where = where | AdaptiveLabelRow.id.in_(list(also))
    statement = (
        select(
            AdaptiveLabelRow.id,
            AdaptiveLabelRow.label,
            AdaptiveLabelRow.embedding,
            AdaptiveLabelRow.source,
            AdaptiveLabelRow.owner,
            AdaptiveLabelRow.request_id,
        )
        .where(where)
        .order_by(AdaptiveLabelRow.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [
            StoredLabel(
                int(i), float(v), bytes(e), _owner(source, o), r if source == FEEDBACK else None
            )
            for i, v, e, source, o, r in connection.execute(statement)
        ]


def _owner(source: str, owner: str | None) -> str | None:
    """A label's tenant as read: a feedback label without one (written by a gateway from
    before migration 0011 while the schema was already at 0011 or later: a rolling update) is
    no tenant's, like one whose request is gone, never shared by every request."""
    if owner is None and source == FEEDBACK:
        return UNKNOWN_OWNER
    return owner


def prune_samples(engine: Engine, before: datetime) -> int:
    """Forget the embeddings of requests older than ``before`` (their labels stay)."""
    with engine.begin() as connection:
        result = connection.execute(delete(AdaptiveSampleRow).where(AdaptiveSampleRow.ts < before))
    return int(result.rowcount)

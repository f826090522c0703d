"""The ledger's tables (SQLAlchemy 2). The Alembic history in ``gateway/ledger/migrations/``
creates them; ``alembic check`` in the tests keeps the two in step."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MONEY = Numeric(20, 12)  # USD; a token of a cheap model costs ~1e-8


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    """One row per request that reached a backend (answered, failed, or cut short)."""

    __tablename__ = "ledger_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # server-made UUIDv7
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    policy_hash: Mapped[str] = mapped_column(String(16))
    route: Mapped[str] = mapped_column(String(128))
    tier: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    score: Mapped[float | None] = mapped_column(Float)
    cache: Mapped[str] = mapped_column(String(32))
    canary_arm: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    fallback_chain: Mapped[str] = mapped_column(String(512))
    stream: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    usage_estimated: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    server_ms: Mapped[float | None] = mapped_column(Float)
    load_ms: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    cost_source: Mapped[str] = mapped_column(String(32))
    baseline_cost_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    cache_saved_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    capabilities: Mapped[str | None] = mapped_column(String(256))
    quality: Mapped[float | None] = mapped_column(Float)  # shadow rows: the comparison, 0-1
    # The v1 scorer's non-zero features as JSON: `policy replay` re-scores under new weights.
    features: Mapped[str | None] = mapped_column(String(512))
    # A confidence cascade: kept | escalated | unescalated, the cheap answer's calibrated
    # confidence, and the cheap call's cost and tokens (already inside the row's totals).
    cascade: Mapped[str | None] = mapped_column(String(16))
    cascade_confidence: Mapped[float | None] = mapped_column(Float)
    cascade_cost_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    cascade_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    cascade_completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # The wire format it came through: chat | completions | embeddings | messages | responses
    # (None: the gateway's own calls, shadow and judge, and rows from before migration 0009).
    api: Mapped[str | None] = mapped_column(String(16))
    # The caller's team (virtual keys) and ``stepped-down`` when a budget moved the request to
    # a cheaper tier than its score chose (None before migration 0010, or no team / no step).
    team: Mapped[str | None] = mapped_column(String(64))
    budget: Mapped[str | None] = mapped_column(String(16))
    # The baseline model ``baseline_cost_usd`` was priced at (pricing.baseline's model, or its
    # prices when it names none); None without a baseline, and before migration 0013.
    baseline_model: Mapped[str | None] = mapped_column(String(256))

    __table_args__ = (
        Index("ix_ledger_requests_ts", "ts"),
        Index("ix_ledger_requests_route_ts", "route", "ts"),
        Index("ix_ledger_requests_key_ts", "key_id", "ts"),
        Index("ix_ledger_requests_team_ts", "team", "ts"),
    )


class FeedbackRow(Base):
    """A quality signal about one answered request, from its user or app (``/v1/feedback``)."""

    __tablename__ = "ledger_feedback"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)  # 0 (bad) to 1 (good)
    comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_ledger_feedback_request_id", "request_id"),)


class CanaryEventRow(Base):
    """A canary decision (start, ready, promote, rollback, pause) with the numbers behind it.
    The latest row of a canary is its state, shared by every replica and kept over restarts."""

    __tablename__ = "canary_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7: sorts by time
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    canary: Mapped[str] = mapped_column(String(64))
    candidate: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(32))  # auto | admin | cli
    reason: Mapped[str] = mapped_column(Text)
    metrics: Mapped[str] = mapped_column(Text)  # JSON: the figures per arm and the guardrails
    # The id of the event this decision was taken after ("" for a canary's first event). At
    # most one decision follows each event: two replicas deciding at once cannot both record.
    follows: Mapped[str] = mapped_column(String(36), server_default="")

    __table_args__ = (
        Index("ix_canary_events_canary_ts", "canary", "ts"),
        Index("ux_canary_events_follows", "canary", "candidate", "follows", unique=True),
    )


class AdaptiveSampleRow(Base):
    """A request the adaptive scorer routed to a cheaper tier, kept until its feedback may
    come: its prompt's embedding (never its text) and the tier that answered. Pruned after
    the policy's ``sample_ttl_h``."""

    __tablename__ = "adaptive_samples"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tier: Mapped[str] = mapped_column(String(64))
    base_score: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float16 × 256
    # The tenant that asked (``team:<team>``, or ``key:<key id>`` without a team): a feedback
    # label on this request carries it (None before migration 0011).
    owner: Mapped[str | None] = mapped_column(String(80))

    __table_args__ = (Index("ix_adaptive_samples_ts", "ts"),)


class AdaptiveLabelRow(Base):
    """A labelled embedding the adaptive scorer learns from (1 = the strong model was needed).
    Every replica reads the rows added since the last id it saw."""

    __tablename__ = "adaptive_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))  # feedback | judge
    label: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    # A feedback label's tenant (the rated request's ``team:<team>`` or ``key:<key id>``): it
    # moves only that tenant's routing unless the policy shares feedback. None: a label every
    # request learns from (a judge's, the gateway's own).
    owner: Mapped[str | None] = mapped_column(String(80))

    __table_args__ = (Index("ix_adaptive_labels_request_id", "request_id"),)


class TeamRow(Base):
    """A team: the budget and rate limits its keys share."""

    __tablename__ = "gov_teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    budget_period: Mapped[str] = mapped_column(String(8), server_default="month")
    on_exhausted: Mapped[str] = mapped_column(String(16), server_default="step_down")
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KeyRow(Base):
    """A virtual key: its SHA-256 digest (never the key), owner, limits and lifetime."""

    __tablename__ = "gov_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    team: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    hint: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it
    budget_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    budget_period: Mapped[str] = mapped_column(String(8), server_default="month")
    on_exhausted: Mapped[str] = mapped_column(String(16), server_default="step_down")
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    routes: Mapped[str | None] = mapped_column(String(1024))  # comma-separated; None: any
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_gov_keys_digest", "digest", unique=True),
        Index("ix_gov_keys_updated_at", "updated_at"),
    )


class SchemaCompatRow(Base):
    """One row: the schema's Alembic revision and the oldest code revision that still reads and
    writes it (``gateway.ledger.schema_compat``); written by the migrations, never the gateway."""

    __tablename__ = "ledger_schema_compat"

    revision: Mapped[str] = mapped_column(String(32), primary_key=True)
    oldest_code: Mapped[str] = mapped_column(String(32))


class RollupRow(Base):
    """The requests of one UTC hour alike in everything a savings-report figure depends on, and
    their sums (``gateway.ledger.rollup``). Written by a trigger on ``ledger_requests`` in the
    row's own transaction (migration 0014), so every writer keeps it, older images included.
    Nullable request columns are kept as '' (a primary key has no NULL)."""

    __tablename__ = "ledger_rollup_hourly"

    hour: Mapped[str] = mapped_column(String(13), primary_key=True)  # "2026-11-20 09", UTC
    team: Mapped[str] = mapped_column(String(64), primary_key=True)
    route: Mapped[str] = mapped_column(String(128), primary_key=True)
    tier: Mapped[str] = mapped_column(String(64), primary_key=True)
    backend: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    cost_source: Mapped[str] = mapped_column(String(32), primary_key=True)
    capabilities: Mapped[str] = mapped_column(String(256), primary_key=True)
    canary_arm: Mapped[str] = mapped_column(String(64), primary_key=True)
    api: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    fallback_chain: Mapped[str] = mapped_column(String(512), primary_key=True)
    escalated: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    hit: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    cost_known: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    baseline_known: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    baseline_model: Mapped[str] = mapped_column(String(256), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    # Money as whole 1e-12 USD (the ledger's 12 decimals): integer sums are exact on SQLite too.
    cost_pico: Mapped[int] = mapped_column(BigInteger)
    baseline_pico: Mapped[int] = mapped_column(BigInteger)

    # SQLite: stored in primary-key order, so a window's hours are read in one sweep.
    __table_args__ = ({"sqlite_with_rowid": False},)


class LatencyBinRow(Base):
    """How many answered (200) requests of one UTC day, alike in every report grouping, took a
    latency (or time to first token) in one bin: bin ``b`` holds [1.02^b, 1.02^(b+1)) ms
    (``gateway.ledger.percentiles``). Kept by the same trigger as ``RollupRow``."""

    __tablename__ = "ledger_latency_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # "2026-11-20", UTC
    team: Mapped[str] = mapped_column(String(64), primary_key=True)
    route: Mapped[str] = mapped_column(String(128), primary_key=True)
    tier: Mapped[str] = mapped_column(String(64), primary_key=True)
    backend: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    cost_source: Mapped[str] = mapped_column(String(32), primary_key=True)
    capabilities: Mapped[str] = mapped_column(String(256), primary_key=True)
    canary_arm: Mapped[str] = mapped_column(String(64), primary_key=True)
    api: Mapped[str] = mapped_column(String(16), primary_key=True)
    metric: Mapped[str] = mapped_column(String(8), primary_key=True)  # latency | ttft
    bin: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    requests: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = ({"sqlite_with_rowid": False},)

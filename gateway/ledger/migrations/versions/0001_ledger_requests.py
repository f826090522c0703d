"""The ledger: one row per request that reached a backend.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 20:03:33.561759
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
oldest_code = "0001"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    op.create_table(
        "ledger_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("policy_hash", sa.String(length=16), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("backend", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("cache", sa.String(length=32), nullable=False),
        sa.Column("canary_arm", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fallback_chain", sa.String(length=512), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("server_ms", sa.Float(), nullable=True),
        sa.Column("load_ms", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Numeric(precision=20, scale=12), nullable=True),
        sa.Column("cost_source", sa.String(length=32), nullable=False),
        sa.Column("baseline_cost_usd", sa.Numeric(precision=20, scale=12), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ledger_requests", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_requests_route_ts", ["route", "ts"], unique=False)
        batch_op.create_index("ix_ledger_requests_ts", ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_requests_ts")
        batch_op.drop_index("ix_ledger_requests_route_ts")

    op.drop_table("ledger_requests")

"""Canary releases and feedback: ``ledger_feedback``, ``canary_events`` and the shadow
comparison's ``quality`` on ``ledger_requests``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
oldest_code = "0004"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("quality", sa.Float(), nullable=True))
    op.create_table(
        "ledger_feedback",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ledger_feedback_request_id", "ledger_feedback", ["request_id"])
    op.create_table(
        "canary_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("canary", sa.String(length=64), nullable=False),
        sa.Column("candidate", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_canary_events_canary_ts", "canary_events", ["canary", "ts"])


def downgrade() -> None:
    op.drop_index("ix_canary_events_canary_ts", table_name="canary_events")
    op.drop_table("canary_events")
    op.drop_index("ix_ledger_feedback_request_id", table_name="ledger_feedback")
    op.drop_table("ledger_feedback")
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("quality")

"""The adaptive scorer's tables: ``adaptive_samples`` (a routed request's prompt embedding,
waiting for its feedback; never the prompt's text) and ``adaptive_labels`` (labelled
embeddings every replica learns from).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
oldest_code = "0007"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    op.create_table(
        "adaptive_samples",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("base_score", sa.Float(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_adaptive_samples_ts", "adaptive_samples", ["ts"])
    op.create_table(
        "adaptive_labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("label", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_adaptive_labels_request_id", "adaptive_labels", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_adaptive_labels_request_id", table_name="adaptive_labels")
    op.drop_table("adaptive_labels")
    op.drop_index("ix_adaptive_samples_ts", table_name="adaptive_samples")
    op.drop_table("adaptive_samples")

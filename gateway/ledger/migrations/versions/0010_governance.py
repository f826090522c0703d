"""Governance: teams and virtual keys (hashed; the key itself is never stored), and on each
ledger row the caller's team and whether a budget stepped the request down a tier.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None
oldest_code = "0010"  # not declared compatible with older code (see schema_compat)

MONEY = sa.Numeric(20, 12)


def _limits() -> list[sa.Column[object]]:
    return [
        sa.Column("budget_usd", MONEY, nullable=True),
        sa.Column("budget_period", sa.String(length=8), nullable=False, server_default="month"),
        sa.Column("on_exhausted", sa.String(length=16), nullable=False, server_default="step_down"),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "gov_teams",
        sa.Column("id", sa.String(length=64), primary_key=True),
        *_limits(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "gov_keys",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=16), nullable=False),
        *_limits(),
        sa.Column("routes", sa.String(length=1024), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gov_keys_digest", "gov_keys", ["digest"], unique=True)
    op.create_index("ix_gov_keys_updated_at", "gov_keys", ["updated_at"])
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("team", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("budget", sa.String(length=16), nullable=True))
    op.create_index("ix_ledger_requests_key_ts", "ledger_requests", ["key_id", "ts"])
    op.create_index("ix_ledger_requests_team_ts", "ledger_requests", ["team", "ts"])


def downgrade() -> None:
    op.drop_index("ix_ledger_requests_team_ts", table_name="ledger_requests")
    op.drop_index("ix_ledger_requests_key_ts", table_name="ledger_requests")
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("budget")
        batch_op.drop_column("team")
    op.drop_index("ix_gov_keys_updated_at", table_name="gov_keys")
    op.drop_index("ix_gov_keys_digest", table_name="gov_keys")
    op.drop_table("gov_keys")
    op.drop_table("gov_teams")

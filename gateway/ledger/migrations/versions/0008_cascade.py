"""``ledger_requests`` columns of the confidence cascade: its decision (kept | escalated |
unescalated), the cheap answer's calibrated confidence, and the cheap call's cost and tokens
(inside the row's cost_usd and token totals).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
oldest_code = "0008"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("cascade", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("cascade_confidence", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("cascade_cost_usd", sa.Numeric(precision=20, scale=12), nullable=True)
        )
        batch_op.add_column(sa.Column("cascade_prompt_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cascade_completion_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        for column in (
            "cascade_completion_tokens",
            "cascade_prompt_tokens",
            "cascade_cost_usd",
            "cascade_confidence",
            "cascade",
        ):
            batch_op.drop_column(column)

"""What a response-cache hit saved: the cost of the answer when it was made.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
oldest_code = "0002"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(
            sa.Column("cache_saved_usd", sa.Numeric(precision=20, scale=12), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("cache_saved_usd")

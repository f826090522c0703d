"""What a request needed of its backend (tools, json, vision, …), comma-separated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
oldest_code = "0003"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("capabilities", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("capabilities")

"""``ledger_requests.api``: the wire format a request came through (chat, completions,
embeddings, messages), so reports can tell the front doors apart.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
oldest_code = "0009"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("api", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("api")

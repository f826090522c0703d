"""``ledger_requests.features``: the v1 scorer's features of each request (JSON, non-zero ones),
so ``tiergate policy replay`` can re-score recent traffic under new weights without keeping
prompts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
oldest_code = "0006"  # not declared compatible with older code (see schema_compat)


def upgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.add_column(sa.Column("features", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch_op:
        batch_op.drop_column("features")

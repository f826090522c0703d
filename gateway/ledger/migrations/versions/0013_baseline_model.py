"""``baseline_model`` on ``ledger_requests``: the baseline model a row's ``baseline_cost_usd``
was priced at, so a savings report over a window that spans policy changes says which baseline
each part of it was measured against. Rows from before stay None (the report counts them as
an unnamed baseline).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None
# Additive: the column is nullable, so code at 0012 (and 0010, see 0011) inserts rows without
# it; its reports ignore it.
oldest_code = "0010"


def upgrade() -> None:
    op.add_column(
        "ledger_requests", sa.Column("baseline_model", sa.String(length=256), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("ledger_requests") as batch:
        batch.drop_column("baseline_model")

"""``ledger_schema_compat``: the oldest code revision that still reads and writes the schema
(each migration's ``oldest_code``, recorded by ``env.py`` after every upgrade or downgrade), so
a gateway older than the schema (a rolling update, a rollback) can tell whether it may start.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None
# A new table no older code touches: code at 0011, and at 0010 (see 0011), is unaffected.
oldest_code = "0010"


def upgrade() -> None:
    op.create_table(
        "ledger_schema_compat",
        sa.Column("revision", sa.String(length=32), primary_key=True),
        sa.Column("oldest_code", sa.String(length=32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_schema_compat")

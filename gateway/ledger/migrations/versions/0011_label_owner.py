"""The tenant of the adaptive scorer's feedback labels: ``owner`` on ``adaptive_samples`` and
``adaptive_labels`` (``team:<team>``, or ``key:<key id>`` for a key without a team; None for a
judge's label, which every request learns from). Existing feedback labels and samples take
their request's owner from ``ledger_requests``; a feedback label whose request is gone gets
``unknown``, which is no tenant's: it counts only where a policy shares feedback.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None
# Additive for code at 0010: the new columns are nullable, so its inserts (no owner) work; the
# feedback labels it writes (no owner) are read by 0011 code as no tenant's (``unknown``), not
# as shared, so a rollout window leaks no tenant's ratings into another's routing.
oldest_code = "0010"

UNKNOWN = "unknown"  # a feedback label whose request is gone: no tenant's
_OWNER_OF_REQUEST = """
    SELECT CASE WHEN r.team IS NOT NULL THEN 'team:' || r.team ELSE 'key:' || r.key_id END
    FROM ledger_requests r WHERE r.id = {table}.request_id
"""


def upgrade() -> None:
    for table in ("adaptive_samples", "adaptive_labels"):
        op.add_column(table, sa.Column("owner", sa.String(length=80), nullable=True))
    samples = _OWNER_OF_REQUEST.format(table="adaptive_samples")
    op.execute(f"UPDATE adaptive_samples SET owner = ({samples})")
    labels = _OWNER_OF_REQUEST.format(table="adaptive_labels")
    op.execute(f"UPDATE adaptive_labels SET owner = ({labels}) WHERE source = 'feedback'")
    op.execute(
        f"UPDATE adaptive_labels SET owner = '{UNKNOWN}' "
        "WHERE source = 'feedback' AND owner IS NULL"
    )


def downgrade() -> None:
    for table in ("adaptive_labels", "adaptive_samples"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("owner")

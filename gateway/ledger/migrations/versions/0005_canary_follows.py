"""One decision per canary state: ``canary_events.follows`` names the event a decision was
taken after, unique per canary and candidate, so two replicas deciding in the same tick
cannot both record. Existing events are chained in time order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
oldest_code = "0005"  # not declared compatible with older code (see schema_compat)

_events = sa.table(
    "canary_events",
    sa.column("id", sa.String),
    sa.column("ts", sa.DateTime(timezone=True)),
    sa.column("canary", sa.String),
    sa.column("candidate", sa.String),
    sa.column("follows", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("canary_events") as batch_op:
        batch_op.add_column(
            sa.Column("follows", sa.String(length=36), server_default="", nullable=False)
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_events.c.id, _events.c.canary, _events.c.candidate).order_by(
            _events.c.canary, _events.c.candidate, _events.c.ts, _events.c.id
        )
    ).all()
    previous: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row.canary, row.candidate)
        if key in previous:
            connection.execute(
                sa.update(_events).where(_events.c.id == row.id).values(follows=previous[key])
            )
        previous[key] = row.id
    op.create_index(
        "ux_canary_events_follows",
        "canary_events",
        ["canary", "candidate", "follows"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_canary_events_follows", table_name="canary_events")
    with op.batch_alter_table("canary_events") as batch_op:
        batch_op.drop_column("follows")

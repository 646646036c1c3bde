"""delivered_events: platform event ids already taken, so a redelivered event is answered once
across restarts and bot replicas.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivered_events",
        sa.Column("platform", sa.String(16), primary_key=True),
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_delivered_events_seen_at", "delivered_events", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_delivered_events_seen_at", "delivered_events")
    op.drop_table("delivered_events")

"""Experts' replies in hand-off threads (`expert_replies`): once the hand-off is resolved they are
a draft answer on the review page (bots/answer_actions.py, feedback/reviews.py).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expert_replies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("handoff_id", sa.Integer(), sa.ForeignKey("handoffs.id"), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("platform", "message_id", name="one_row_per_reply"),
    )
    op.create_index("ix_expert_replies_handoff_id", "expert_replies", ["handoff_id"])
    op.create_index("ix_handoffs_conversation", "handoffs", ["platform", "channel", "thread"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_conversation", table_name="handoffs")
    op.drop_index("ix_expert_replies_handoff_id", table_name="expert_replies")
    op.drop_table("expert_replies")

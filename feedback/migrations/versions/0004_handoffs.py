"""Hand-offs to people, the sources an answer showed, and its one feedback reminder.

- handoffs: "I need more help" on an answer (who asked, when; who resolved it, when).
- answers.sources: the cited sources as shown, so that an answer can be shown again (shared
  from a private reply, quoted in a hand-off) by any bot process.
- answers.reminded_at: when the asker was reminded to vote; set once, so never a second time.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("sources", sa.JSON, nullable=True))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.id"), nullable=False, unique=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(64)),
        sa.Column("thread", sa.String(64)),
        sa.Column("message_id", sa.String(64)),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("handoffs")
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("reminded_at")
        batch.drop_column("sources")

"""The schema as teambot created it before migrations: answers, their ratings and message parts.

A database made by an earlier version (by `create_all`, without an alembic_version table) may
lack the newest of these (answer_parts, the conversation index): whatever is missing is added,
and what exists is left as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "answers" not in tables:
        op.create_table(
            "answers",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True)),
            sa.Column("platform", sa.String(16), nullable=False),
            sa.Column("workspace", sa.String(64)),
            sa.Column("channel", sa.String(64)),
            sa.Column("thread", sa.String(64)),
            sa.Column("message_id", sa.String(64)),
            sa.Column("user_hash", sa.String(64)),
            sa.Column("question", sa.Text, nullable=False),
            sa.Column("collection", sa.String(128), nullable=False),
            sa.Column("retrieved", sa.JSON, nullable=False),
            sa.Column("context", sa.Text, nullable=False),
            sa.Column("prompt", sa.JSON, nullable=False),
            sa.Column("answer_text", sa.Text, nullable=False),
            sa.Column("abstained", sa.Boolean, nullable=False),
            sa.Column("model", sa.String(128), nullable=False),
            sa.Column("timings", sa.JSON, nullable=False),
        )
        op.create_index("ix_answers_message_id", "answers", ["message_id"])
    if "ratings" not in tables:
        op.create_table(
            "ratings",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.id"), nullable=False),
            sa.Column("user_hash", sa.String(64), nullable=False),
            sa.Column("value", sa.Integer, nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("correction", sa.Text),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.UniqueConstraint("answer_id", "user_hash", name="one_rating_per_user"),
        )
        op.create_index("ix_ratings_answer_id", "ratings", ["answer_id"])
    if "answer_parts" not in tables:
        op.create_table(
            "answer_parts",
            sa.Column("platform", sa.String(16), primary_key=True),
            sa.Column("message_id", sa.String(64), primary_key=True),
            sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.id"), nullable=False),
        )
        op.create_index("ix_answer_parts_answer_id", "answer_parts", ["answer_id"])
    if "ix_answers_conversation" not in {ix["name"] for ix in inspector.get_indexes("answers")}:
        op.create_index("ix_answers_conversation", "answers", ["platform", "channel", "thread"])


def downgrade() -> None:
    op.drop_table("answer_parts")
    op.drop_table("ratings")
    op.drop_table("answers")

"""The review page: reviewers, reviews of answers with their audit trail, document overrides,
and the indexes the inbox filters and sorts by.

- reviewers: who may log in (scrypt password hash), failed logins and lockout.
- reviews: a reviewer's correction, cause, exclusion from training and approval for serving.
- review_events: every change to a review or a document override, with who and when.
- document_overrides: a reviewer demotes or hides a document of a collection in retrieval.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviewers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "reviews",
        sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.id"), primary_key=True),
        sa.Column("correction", sa.Text),
        sa.Column("cause", sa.String(32)),
        sa.Column("exclude", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("approved", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reviews_approved", "reviews", ["approved"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(1200), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("old", sa.Text),
        sa.Column("new", sa.Text),
    )
    op.create_index("ix_review_events_subject", "review_events", ["subject"])
    op.create_table(
        "document_overrides",
        sa.Column("collection", sa.String(128), primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_answers_created_at", "answers", ["created_at"])
    op.create_index("ix_answers_collection_created", "answers", ["collection", "created_at"])
    op.create_index("ix_answers_model_created", "answers", ["model", "created_at"])


def downgrade() -> None:
    for index in ("ix_answers_model_created", "ix_answers_collection_created", "ix_answers_created_at"):
        op.drop_index(index, table_name="answers")
    op.drop_table("document_overrides")
    op.drop_index("ix_review_events_subject", table_name="review_events")
    op.drop_table("review_events")
    op.drop_index("ix_reviews_approved", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("reviewers")

"""Reviewer roles (admin manages reviewers; reviewer reviews) and disabled accounts; who took an
answer to review (`review_claims`). Reviewers made before roles existed could do everything: they
become admins, so nobody is locked out of managing the page.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reviewers", sa.Column("role", sa.String(16), nullable=False, server_default="reviewer"))
    op.add_column("reviewers", sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE reviewers SET role = 'admin'")
    op.create_table(
        "review_claims",
        sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.id"), primary_key=True),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_claims")
    with op.batch_alter_table("reviewers") as batch:
        batch.drop_column("disabled")
        batch.drop_column("role")

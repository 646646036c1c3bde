"""Reviewer sessions end at logout: a session version per reviewer, kept in every session opened
and moved on at logout and at a new password; a session carrying an older one is logged out.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reviewers", sa.Column("session_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("reviewers") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("session_version")

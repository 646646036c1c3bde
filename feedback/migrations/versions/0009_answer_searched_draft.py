"""What a follow-up was searched as (`answers.searched`: pipeline/followups.py), and the model's
text when the asker was shown something else (`answers.draft`: an answer no passage supported,
pipeline/grounding.py). The review page shows both.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("answers", sa.Column("searched", sa.Text(), nullable=True))
    op.add_column("answers", sa.Column("draft", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("searched")
        batch.drop_column("draft")

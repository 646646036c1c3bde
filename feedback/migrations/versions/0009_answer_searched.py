"""What a follow-up was searched as (`answers.searched`): the standalone question the model rewrote
it into, or the follow-up glued to the previous question when the rewrite failed; empty for a
question searched as asked. The review page shows it beside the question.

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


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("searched")

"""Who could see an answer when it was given (`answers.audience`): everyone in a public channel,
the members of a private channel, one person in a DM, the people a channel rule allows, or the
asker alone. The training export leaves out all but public answers unless the operator names the
channel, whatever the channel rules say by the time of the export.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("answers", sa.Column("audience", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("audience")

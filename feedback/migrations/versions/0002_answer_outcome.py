"""answers.outcome: answered, abstained or withheld (the leak guard's refusals were "abstained").

Existing rows get `abstained` or `answered` from their abstained flag; a withheld answer is
recognised by the text the guard replaces it with.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WITHHELD = "I can't share that: the answer would have revealed my instructions or a secret."


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=False, server_default="answered"))
    answers = sa.table("answers", sa.column("abstained", sa.Boolean), sa.column("answer_text", sa.Text),
                       sa.column("outcome", sa.String))
    op.execute(answers.update().where(answers.c.abstained.is_(True)).values(outcome="abstained"))
    op.execute(answers.update().where(answers.c.answer_text == WITHHELD).values(outcome="withheld"))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("outcome")

"""Synced sources (`teambot sync`): each source's state, and each document's version at its origin.

- sync_sources: one row per source: the lock that keeps two processes from syncing it at once
  (owner, expiry), its cursor (a git commit), when it last ran and last succeeded, the last error,
  consecutive failures (for the back-off) and the last run's counts.
- sync_items: one row per document of a source: its key (URL, path), the origin's change signal
  (ETag, Last-Modified, git blob id), the content hash written, and when the page last changed.
  A row is written only after the document's chunks are all in the collection, so a sync killed
  midway resumes where it stopped.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_sources",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("lock_owner", sa.String(128)),
        sa.Column("lock_expires", sa.DateTime(timezone=True)),
        sa.Column("cursor", sa.String(128)),
        sa.Column("last_started", sa.DateTime(timezone=True)),
        sa.Column("last_finished", sa.DateTime(timezone=True)),
        sa.Column("last_success", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("counts", sa.JSON),
    )
    op.create_table(
        "sync_items",
        sa.Column("source", sa.String(64), sa.ForeignKey("sync_sources.name"), primary_key=True),
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("etag", sa.String(256)),
        sa.Column("last_modified", sa.String(64)),
        sa.Column("version", sa.String(128)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_items")
    op.drop_table("sync_sources")

"""Alembic's environment for the feedback store: run on the connection FeedbackStore hands it,
or on TEAMBOT_FEEDBACK_DB_URL when run by the `alembic` command itself."""

from __future__ import annotations

from alembic import context

from feedback.store import Base, engine_for

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    from core.settings import load_settings

    with engine_for(load_settings().feedback_url).connect() as connection:
        _migrate(connection)


def _migrate(connection) -> None:
    # batch mode: SQLite alters a table by copying it; PostgreSQL alters it in place.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()

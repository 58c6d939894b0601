"""Alembic environment: always run from ``overcast.store.migrate`` with an open connection."""

from __future__ import annotations

from alembic import context

from overcast.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "overcast migrations run through overcast.store.migrate.upgrade(), not the alembic CLI"
    )

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

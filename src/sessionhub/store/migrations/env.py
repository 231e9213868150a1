"""Alembic environment: migrations run on the connection the store hands in."""

from __future__ import annotations

from alembic import context

from sessionhub.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `sessionhub migrate` (the store passes a connection)"
    )

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

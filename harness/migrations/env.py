"""Alembic environment: archbench passes the connection (already inside its write
transaction, under the schema lock) as ``config.attributes["connection"]``; batch mode lets
SQLite alter tables that it cannot ALTER in place."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs on the connection fleetcore.migrate hands it."""

from __future__ import annotations

from alembic import context

from fleetcore.migrate import include_name
from fleetcore.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `fleetcore db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()

"""Autogenerate an Alembic revision: `python scripts/new_migration.py 0003 "devices"`.

Compares the models with a scratch SQLite database at head; review the file it writes (batch
mode, server defaults and type details) before committing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import Connection

from fleetcore import migrate
from fleetcore.db import Database


def _revision(connection: Connection, rev_id: str, message: str) -> None:
    config = migrate.alembic_config()
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True, rev_id=rev_id)


async def main(rev_id: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database.from_url(f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.db'}")
        try:
            await migrate.upgrade(database)
            async with database.engine.begin() as connection:
                await connection.run_sync(_revision, rev_id, message)
        finally:
            await database.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

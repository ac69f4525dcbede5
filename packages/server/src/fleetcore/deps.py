"""Request dependencies shared by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.config import Settings
from fleetcore.db import Database


def get_database(request: Request) -> Database:
    """The application's Database."""
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    """The application's Settings."""
    settings: Settings = request.app.state.settings
    return settings


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def get_session(
    request: Request, database: Annotated[Database, Depends(get_database)]
) -> AsyncIterator[AsyncSession]:
    """A session per request; services commit explicitly, the rest is rolled back.

    Requests that change things get a writer session (see Database.session).
    """
    async with database.session(write=request.method in WRITE_METHODS) as session:
        yield session


async def get_read_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """A plain session for a write request that does not write through it (device ingest:
    the pipeline writes), so the hot path never queues for SQLite's write lock."""
    async with database.session() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

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


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """A session per request; services commit explicitly, the rest is rolled back."""
    async with database.session() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

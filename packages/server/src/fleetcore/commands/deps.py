"""Request dependencies of the commands domain, for its router and for the routers of
other domains that send commands (recommendations), so none imports another's router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleetcore.commands.delivery import CommandService


def _commands(request: Request) -> CommandService:
    commands: CommandService = request.app.state.commands
    return commands


CommandsDep = Annotated[CommandService, Depends(_commands)]

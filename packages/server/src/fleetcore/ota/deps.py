"""What the OTA API and pages share: the package store and the live hub of the app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleetcore.live.hub import LiveHub
from fleetcore.media.store import MediaStore


def get_store(request: Request) -> MediaStore:
    """The OTA store built at startup (fleetcore.app)."""
    store: MediaStore = request.app.state.ota_store
    return store


def get_hub(request: Request) -> LiveHub:
    """The live hub."""
    hub: LiveHub = request.app.state.live
    return hub


StoreDep = Annotated[MediaStore, Depends(get_store)]
HubDep = Annotated[LiveHub, Depends(get_hub)]

"""The API property tests' fixtures: a world per module (a real uvicorn on a live database,
populated), real objects' ids and signed-in callers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.support.api_properties import (
    BACKENDS,
    REQUEST_TIMEOUT_S,
    World,
    populate,
)
from tests.support.postgres import PostgresServer
from tests.support.threaded import ThreadedServer


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The app on a live database of the backend under a real uvicorn, populated."""
    tmp = tmp_path_factory.mktemp("apiprops")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'apiprops.db'}"
    else:
        postgres: PostgresServer | None = request.getfixturevalue("postgres_server")
        if postgres is None:
            pytest.fail("the PostgreSQL run needs the throwaway server")
        url = postgres.create_database("fleetcore_apiprops")
    # Schemathesis signs in with wrong passwords by design: no lockout for the test address.
    server = ThreadedServer(url, tmp, login_max_failures_per_address=1_000_000)
    server.start()
    try:
        tenant, superuser_email, ids = server.run(populate(server))
        yield World(server, tenant, superuser_email, ids)
    finally:
        server.stop()


@pytest.fixture
def objects(world: World, request: pytest.FixtureRequest) -> dict[str, str]:
    """Ids of real objects; a DELETE gets its own, so it cannot take them from the others."""
    label = getattr(request.node, "operation_label", "") or ""
    if label.startswith("DELETE "):
        return world.new_objects()
    return world.ids


@pytest.fixture
def bearer(world: World, role: str) -> dict[str, str]:
    """The role's credentials, signed in afresh for each test (one may end its session)."""
    return {"Authorization": f"Bearer {world.login(world.email(role))}"}


@pytest.fixture
def device(world: World) -> dict[str, str]:
    """A device of its own with a persistent command queued: its token and ids."""
    manager = {"Authorization": f"Bearer {world.login(world.email('manager'))}"}
    created = requests.post(
        f"{world.base_url}/api/v1/devices",
        headers=manager,
        json={"name": "prop device", "serial_number": f"PROP-{uuid.uuid4().hex}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert created.status_code == 201, created.text
    device_id, token = created.json()["id"], created.json()["access_token"]
    command = requests.post(
        f"{world.base_url}/api/v1/devices/{device_id}/commands",
        headers=manager,
        json={"method": "reboot", "persistent": True},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert command.status_code == 201, command.text
    return {
        "token": token,
        "command_id": command.json()["id"],
        "request_id": str(command.json()["rpc_id"]),
    }


@pytest.fixture
def admin(world: World) -> dict[str, str]:
    """The admin's credentials, signed in afresh for each test (one may end its session)."""
    return {"Authorization": f"Bearer {world.login(world.email('admin'))}"}

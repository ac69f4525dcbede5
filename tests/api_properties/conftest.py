"""The API property tests' fixtures: a world per module (a real uvicorn on a live database,
populated), real objects' ids and signed-in callers."""

from __future__ import annotations

import math
import time
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
        world = World(server, tenant, superuser_email, ids)
        yield world
        world.session.close()
    finally:
        server.stop()


@pytest.fixture
def objects(world: World, request: pytest.FixtureRequest) -> dict[str, str]:
    """Ids of real objects; a DELETE gets its own, so it cannot take them from the others."""
    label = getattr(request.node, "operation_label", "") or ""
    if label.startswith("DELETE "):
        return world.new_objects()
    return world.ids


# A test of an operation under this path may end its caller's session (logout, a password
# change, a refresh): the next test of that role signs in afresh.
SESSION_ROUTES = "/api/v1/auth/"
# A token is used this long at most (seconds), far inside its lifetime (15 minutes): an
# expired one would be answered 401, which the checks accept, and test nothing.
TOKEN_REUSE_S = 60.0


@pytest.fixture(scope="module")
def signed_in(world: World) -> dict[str, tuple[str, float]]:
    """role -> an access token and when it was issued, shared by the module's tests (a
    sign-in is an argon2 verification and two inserts per test otherwise)."""
    return {}


def _token(world: World, signed_in: dict[str, tuple[str, float]], role: str) -> str:
    token, issued = signed_in.get(role, ("", -math.inf))
    if time.monotonic() - issued > TOKEN_REUSE_S:
        token, issued = world.login(world.email(role)), time.monotonic()
        signed_in[role] = token, issued
    return token


def _credentials(
    world: World,
    signed_in: dict[str, tuple[str, float]],
    role: str,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, str]]:
    yield {"Authorization": f"Bearer {_token(world, signed_in, role)}"}
    label = getattr(request.node, "operation_label", "") or ""
    if SESSION_ROUTES in label:
        signed_in.pop(role, None)


@pytest.fixture
def bearer(
    world: World, signed_in: dict[str, tuple[str, float]], role: str, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    """The role's credentials; signed in afresh after a test that may have ended them."""
    yield from _credentials(world, signed_in, role, request)


@pytest.fixture
def device(world: World, signed_in: dict[str, tuple[str, float]]) -> dict[str, str]:
    """A device of its own with a persistent command queued: its token and ids."""
    manager = {"Authorization": f"Bearer {_token(world, signed_in, 'manager')}"}
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
def admin(
    world: World, signed_in: dict[str, tuple[str, float]], request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    """The admin's credentials; signed in afresh after a test that may have ended them."""
    yield from _credentials(world, signed_in, "admin", request)

"""Cursors are checked once, in paginate(): a cursor that does not decode, or whose values do
not have the types of the list's columns, answers 422 INVALID_CURSOR with the envelope on any
list (not only the ones that once checked for themselves), and a real cursor still pages."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import fleetcore.app  # noqa: F401  (maps every domain's models)
from fleetcore.auth.principal import Role
from fleetcore.models import Base
from fleetcore.pagination import encode_cursor
from tests.support.devices import new_device
from tests.support.tenants import Tenant

NOW = datetime(2026, 1, 1, tzinfo=UTC)

# Lists sorted by (name, uuid id): assets, notification channels; by (int id, int id):
# a device's status history. None of them checked their cursor before paginate() did.
NAME_LISTS = ("/api/v1/assets", "/api/v1/notification-channels")
BAD_NAME_CURSORS: tuple[tuple[Any, Any], ...] = (
    (NOW, uuid.uuid4()),  # a time where the list sorts by name
    ("a", 7),  # an int id where ids are uuids
    ("a", "not-a-uuid"),
    (None, uuid.uuid4()),  # names are never null
    (True, uuid.uuid4()),
)


def forged(raw: str) -> str:
    """A cursor made by hand (ours are base64 of tagged JSON); encode_cursor refuses big ints."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _envelope_422(answer: httpx.Response) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_CURSOR"
    assert error["message"]
    assert "request_id" in error


@pytest.mark.parametrize("path", NAME_LISTS)
async def test_a_cursor_of_the_wrong_shape_is_422(
    client: httpx.AsyncClient, tenant: Tenant, path: str
) -> None:
    headers = tenant.headers(Role.ADMIN)
    for cursor in ("!!", "bm9wZQ", *(encode_cursor(*values) for values in BAD_NAME_CURSORS)):
        _envelope_422(await client.get(path, headers=headers, params={"cursor": cursor}))


async def test_numbers_past_the_column_are_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    # A BIGINT id: 2**63 would overflow the driver on PostgreSQL; a bool is not an id.
    device_id, _ = await new_device(client, tenant)
    path = f"/api/v1/devices/{device_id}/status-history"
    headers = tenant.headers(Role.VIEWER)
    for raw in (
        '[["v", 9223372036854775808], ["v", 1]]',
        '[["v", 1], ["v", -9223372036854775809]]',
        '[["v", true], ["v", 1]]',
        '[["v", 1.5], ["v", 1]]',
        f'[["dt", "{NOW.isoformat()}"], ["v", 1]]',
    ):
        cursor = forged(raw)
        _envelope_422(await client.get(path, headers=headers, params={"cursor": cursor}))
    fine = encode_cursor(2**63 - 1, 2**63 - 1)
    answer = await client.get(path, headers=headers, params={"cursor": fine})
    assert answer.status_code == 200, answer.text


async def test_a_real_cursor_pages_through_the_list(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = tenant.headers(Role.ADMIN)
    for name in ("c", "a", "b"):
        created = await client.post(
            "/api/v1/assets", headers=headers, json={"name": name, "type": "site"}
        )
        assert created.status_code == 201, created.text
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        page = await client.get("/api/v1/assets", headers=headers, params=params)
        assert page.status_code == 200, page.text
        seen += [item["name"] for item in page.json()["items"]]
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert seen == ["a", "b", "c"]


def test_every_column_type_names_its_python_type() -> None:
    """paginate() compares a cursor's values with the column's Python type; a column type
    that could not say would let a forged cursor reach the database unchecked."""
    mappers = list(Base.registry.mappers)
    assert len(mappers) > 50  # every domain's models are mapped (fleetcore.app imports them)
    unnamed = []
    for mapper in mappers:
        for column in mapper.columns:
            try:
                column.type.python_type  # noqa: B018
            except NotImplementedError:
                unnamed.append(f"{mapper.class_.__name__}.{column.key}")
    assert unnamed == []

"""One error envelope for every failure, with the request id."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleetcore.auth.principal import Role
from fleetcore.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited
from tests.support.tenants import Tenant


class _Thing(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=0)


@pytest.fixture
def probe_app(app: FastAPI) -> FastAPI:
    """Routes that raise each kind of error through the real handlers."""

    @app.post("/probe/things")
    async def create_thing(thing: _Thing) -> _Thing:
        return thing

    @app.get("/probe/{kind}")
    async def fail(kind: str) -> None:
        errors = {
            "notfound": NotFound("device 7 not found", code="DEVICE_NOT_FOUND"),
            "conflict": Conflict("serial taken", details={"field": "serial_number"}),
            "forbidden": Forbidden("viewers cannot write"),
            "invalid": Invalid("bad"),
            "ratelimited": RateLimited("slow down", retry_after_s=42),
        }
        if kind in errors:
            raise errors[kind]
        if kind == "locked":
            raise OperationalError("UPDATE devices", {}, Exception("database is locked"))
        if kind in ("nul", "dberror"):
            orig = Exception("invalid byte sequence for encoding UTF8: 0x00")
            orig.sqlstate = "22021" if kind == "nul" else "42P01"  # type: ignore[attr-defined]
            raise DBAPIError("SELECT 1 WHERE name = $1", {}, orig)
        if kind == "pool":  # what a slow database leaves requests waiting for
            raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")
        raise RuntimeError("secret internals: password=hunter2")

    return app


def _assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


async def test_unknown_route_is_404_envelope_with_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    error = _assert_envelope(response, 404, "NOT_FOUND")
    assert "/no/such/route" in str(error["message"])


async def test_incoming_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    assert response.json()["error"]["request_id"] == "trace-abc-123"


async def test_unsafe_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert response.headers["x-request-id"] != "x" * 500
    assert len(response.headers["x-request-id"]) == 32


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    _assert_envelope(await client.delete("/health"), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_400(probe_app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/probe/things", content=b'{"name": "a", ', headers={"content-type": "application/json"}
    )
    _assert_envelope(response, 400, "MALFORMED_JSON")


async def test_validation_names_each_bad_field(
    probe_app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post("/probe/things", json={"name": "", "size": -1})
    error = _assert_envelope(response, 422, "VALIDATION_ERROR")
    fields = {e["field"] for e in error["details"]["errors"]}  # type: ignore[index]
    assert fields == {"body.name", "body.size"}


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("notfound", 404, "DEVICE_NOT_FOUND"),
        ("conflict", 409, "CONFLICT"),
        ("forbidden", 403, "FORBIDDEN"),
        ("invalid", 422, "INVALID"),
        ("ratelimited", 429, "RATE_LIMITED"),
    ],
)
async def test_domain_errors_map_to_status(
    probe_app: FastAPI, client: httpx.AsyncClient, kind: str, status: int, code: str
) -> None:
    response = await client.get(f"/probe/{kind}")
    _assert_envelope(response, status, code)
    if kind == "ratelimited":
        assert response.headers["retry-after"] == "42"
    if kind == "conflict":
        assert response.json()["error"]["details"] == {"field": "serial_number"}


async def test_unhandled_error_is_500_without_internals(
    probe_app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/probe/boom")
    _assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text


async def test_busy_database_is_503_with_retry_after(
    probe_app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/probe/locked")
    _assert_envelope(response, 503, "DATABASE_UNAVAILABLE")
    assert response.headers["retry-after"] == "1"
    assert "UPDATE devices" not in response.text


async def test_text_the_database_cannot_hold_is_422(
    probe_app: FastAPI, client: httpx.AsyncClient
) -> None:
    _assert_envelope(await client.get("/probe/nul"), 422, "INVALID_CHARACTER")
    # Any other database error stays a 500, logged.
    _assert_envelope(await client.get("/probe/dberror"), 500, "INTERNAL_ERROR")


async def test_a_nul_character_is_never_a_500(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """PostgreSQL refuses NUL in text and in jsonb; found on sign-in (before any credential),
    command params and the search filters of events, audit and telemetry."""
    device = await client.post(
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": "nul", "serial_number": "NUL-1"},
    )
    device_id = device.json()["id"]
    admin = tenant.headers(Role.ADMIN)
    answers = [
        await client.post("/api/v1/auth/login", json={"email": "a\u0000@x.io", "password": "p"}),
        await client.post(
            f"/api/v1/devices/{device_id}/commands",
            headers=admin,
            json={"method": "m", "params": {"k": "\u0000"}, "persistent": True},
        ),
        await client.get(f"/api/v1/devices/{device_id}/events?type=a%00", headers=admin),
        await client.get("/api/v1/audit?action=a%00", headers=admin),
        await client.get(f"/api/v1/devices/{device_id}/telemetry?keys=a%00", headers=admin),
    ]
    for response in answers:
        # SQLite stores a NUL (the command is 201); PostgreSQL cannot: then 422, not 500.
        assert response.status_code < 500, f"{response.request.url}: {response.text}"
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"code", "message", "details", "request_id"}


async def test_no_free_database_connection_is_503_with_retry_after(
    probe_app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/probe/pool")
    _assert_envelope(response, 503, "DATABASE_UNAVAILABLE")
    assert response.headers["retry-after"] == "1"

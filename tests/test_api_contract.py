"""The API says what it answers: errors documented with the envelope, methods, routing.

Each test here pins a defect the API property tests (tests/api_properties/) found, on the
schema or on routing alone, so it fails fast and without a database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from fleetcore.app import create_app
from tests.conftest import make_settings
from tests.support.sweep import NON_ID_PARAMS

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    """The OpenAPI document of the app."""
    return create_app(make_settings(tmp_path)).openapi()


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan: routing and error handlers, no database behind them."""
    app = create_app(make_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _api_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
    ]


def test_every_api_operation_documents_its_errors_with_the_envelope(
    spec: dict[str, Any],
) -> None:
    missing = []
    for method, path, operation in _api_operations(spec):
        documented = set(operation["responses"])
        lacking = {"401", "403", "404", "422", "503"} - documented
        if lacking:
            missing.append(f"{method} {path}: {sorted(lacking)}")
        for status, response in operation["responses"].items():
            if status[0] in "45" and "content" in response:
                assert "ErrorEnvelope" in json.dumps(response), f"{method} {path} {status}"
    assert not missing, "\n".join(missing)
    # FastAPI's own 422 body ({"detail": [...]}) is not what the API answers.
    assert "HTTPValidationError" not in json.dumps(spec)


def _concrete(path: str) -> str:
    """The path with a well-formed value in each parameter."""
    integer_ids = {
        "dead_letter_id": "1",
        "request_id": "1",
        "line_id": "1",
        "audit_id": "1",
        "finding_id": "1",
        "read_id": "1",
    }
    values = {**NON_ID_PARAMS, **integer_ids, "token": "some-token"}
    for name in [part.strip("{}") for part in path.split("/") if part.startswith("{")]:
        path = path.replace("{" + name + "}", values.get(name, str(uuid.uuid4())))
    return path


async def test_a_method_a_path_does_not_have_is_405_naming_every_method_it_has(
    spec: dict[str, Any], bare: httpx.AsyncClient
) -> None:
    """Also for literal paths beside an id route (PATCH /assets/tree was read as an asset id
    and answered 422), and Allow lists them all (it named only the first route's)."""
    wrong: list[str] = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        declared = {method.upper() for method in operations}
        url = _concrete(path)
        for method in sorted({"OPTIONS", *HTTP_METHODS} - declared):
            response = await bare.request(method, url)
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            if response.status_code != 405 or allowed - {"HEAD"} != declared:
                wrong.append(f"{method} {path}: {response.status_code} Allow: {allowed}")
    assert not wrong, "\n".join(wrong)


def test_multipart_bodies_state_the_parts_the_parser_takes(spec: dict[str, Any]) -> None:
    """The form parser refuses a fifth part (422 MULTIPART_INVALID): a schema allowing it
    promised what the server refuses."""
    five_parts = {"file": "ts,key,value\n", "a": "1", "b": "2", "c": "3", "d": "4"}
    checked = 0
    for method, path, operation in _api_operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        if "multipart/form-data" in content:
            schema = content["multipart/form-data"]["schema"]
            errors = list(Draft202012Validator(schema).iter_errors(five_parts))
            assert errors, f"{method} {path} documents five parts as valid"
            checked += 1
    assert checked >= 2


async def test_a_malformed_id_is_404_on_every_route(
    spec: dict[str, Any], bare: httpx.AsyncClient
) -> None:
    """Ids are matched as UUIDs by the route: "not-an-id" is no such object (and no hint
    of the route behind it, whatever the credentials)."""
    wrong = []
    for method, path, operation in _api_operations(spec):
        ids = [
            p["name"]
            for p in operation.get("parameters", [])
            if p["in"] == "path" and p.get("schema", {}).get("format") == "uuid"
        ]
        if not ids:
            continue
        for name in ids:
            malformed = _concrete(path.replace("{" + name + "}", "not-an-id"))
            response = await bare.request(method, malformed)
            if response.status_code != 404:
                wrong.append(f"{method} {path} ({name}): {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_documented_errors_carry_the_envelope(spec: dict[str, Any]) -> None:
    """A route's own `responses={404: {}}` once replaced the envelope with nothing."""
    bare_errors = [
        f"{method} {path} {status}"
        for method, path, operation in _api_operations(spec)
        for status, response in operation["responses"].items()
        if status[0] in "45" and "content" not in response
    ]
    assert not bare_errors, "\n".join(bare_errors)

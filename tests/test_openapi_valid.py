"""The OpenAPI description is valid and complete enough to generate a typed client, and
both readers of it (Swagger UI at /api/docs, ReDoc at /api/redoc) are served offline."""

from __future__ import annotations

import re
from collections import Counter
from importlib.resources import files
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import OpenAPIV31SpecValidator
from playwright.async_api import BrowserContext, expect

from tests.support.browser import new_page

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_schema_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"[:300]
        for error in OpenAPIV31SpecValidator(spec).iter_errors()
    ]
    assert errors == []
    assert len(_operations(spec)) >= 100


def test_every_operation_can_become_a_typed_method(spec: dict[str, Any]) -> None:
    operations = _operations(spec)
    ids = Counter(operation.get("operationId") for _, _, operation in operations)
    assert None not in ids
    assert [name for name, count in ids.items() if count > 1] == []
    failures = []
    for method, path, operation in operations:
        where = f"{method} {path}"
        if not operation.get("summary") or not operation.get("tags"):
            failures.append(f"{where}: no summary or tags")
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        if declared != set(re.findall(r"{([^}:]+)", path)):
            failures.append(f"{where}: path parameters {declared}")
        body = operation.get("requestBody", {}).get("content", {})
        failures += [f"{where}: {kind} body has no schema" for kind, m in body.items() if not m]
        for status, response in operation["responses"].items():
            for kind, media in response.get("content", {}).items():
                if status.startswith("2") and not media.get("schema"):
                    failures.append(f"{where}: {status} {kind} has no schema")
    assert failures == []


def test_component_names_are_identifiers(spec: dict[str, Any]) -> None:
    names = list(spec["components"]["schemas"])
    assert [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", n)] == []


async def test_redoc_is_served_offline_under_its_own_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/api/redoc")
    assert page.status_code == 200
    assert '<redoc spec-url="/api/openapi.json"' in page.text
    assert "/static/vendor/redoc/redoc.standalone.js" in page.text
    assert "cdn" not in page.text.lower()
    assert "<script>" not in page.text  # no inline script: the bundle starts itself
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy  # scripts: Fleetcore's own files only
    assert "style-src 'self' 'unsafe-inline'" in policy  # ReDoc styles at run time
    asset = await client.get("/static/vendor/redoc/redoc.standalone.js")
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert len(asset.content) > 500_000  # the whole standalone bundle, not a stub
    vendor = files("fleetcore") / "static" / "vendor" / "redoc"
    assert "MIT" in (vendor / "LICENSE").read_text()
    assert (vendor / "VERSION").read_text().startswith("redoc@")
    # Swagger UI keeps the strict policy.
    docs = await client.get("/api/docs")
    assert "'unsafe-inline'" not in docs.headers["content-security-policy"]


async def test_redoc_renders_the_api_in_chromium(
    site: tuple[FastAPI, str], context: BrowserContext
) -> None:
    _, base = site
    page, console = await new_page(context)
    await page.goto(f"{base}/api/redoc")
    await expect(page.locator("h1").first).to_contain_text("Fleetcore", timeout=20_000)
    await expect(page.get_by_text("/api/v1/housekeeping/retention").first).to_be_attached()
    # The one thing refused: ReDoc's footer logo from its CDN (offline, and no third-party
    # request from our pages); the image hides itself.
    refused = [e for e in console.errors if "cdn.redoc.ly" not in e]
    assert refused == []

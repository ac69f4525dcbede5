"""CORS for a separate front-end: off by default, exact listed origins only, credentials
only when allowed and only for those origins."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fleetcore.config import ConfigError, load_settings
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.tenants import make_tenant

FRONT_END = "https://app.example.com"
STRANGER = "https://evil.example.net"


def _preflight(origin: str, method: str = "PUT") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/api/v1/devices", headers=_preflight(FRONT_END))
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/health", headers={"Origin": FRONT_END})
    assert simple.status_code == 200
    assert not any(name.startswith("access-control-") for name in simple.headers)


async def test_a_listed_origin_is_answered_an_unlisted_one_is_not(
    db: Database, tmp_path: Path
) -> None:
    async with (
        running_app(
            db, tmp_path, cors_origins=[FRONT_END, "http://localhost:5173"],
            cors_allow_credentials=True,
        ) as app,
        client_for(app) as http,
    ):  # fmt: skip
        listed = await http.options("/api/v1/devices", headers=_preflight(FRONT_END))
        assert listed.status_code == 200, listed.text
        assert listed.headers["access-control-allow-origin"] == FRONT_END  # never *
        assert listed.headers["access-control-allow-credentials"] == "true"
        assert "PUT" in listed.headers["access-control-allow-methods"]
        assert "authorization" in listed.headers["access-control-allow-headers"].lower()
        assert "origin" in listed.headers["vary"].lower()

        unlisted = await http.options("/api/v1/devices", headers=_preflight(STRANGER))
        assert unlisted.status_code == 400
        assert "access-control-allow-origin" not in unlisted.headers
        assert "access-control-allow-credentials" not in unlisted.headers

        tenant = await make_tenant(http, db)
        mine = await http.get("/api/v1/devices", headers={**tenant.headers(), "Origin": FRONT_END})
        assert mine.status_code == 200
        assert mine.headers["access-control-allow-origin"] == FRONT_END
        assert "x-request-id" in mine.headers["access-control-expose-headers"].lower()
        # Errors carry the headers too, so the front-end can read the envelope.
        refused = await http.get("/api/v1/devices", headers={"Origin": FRONT_END})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == FRONT_END
        # An unlisted origin's browser may send, but never read the answer.
        theirs = await http.get("/api/v1/devices", headers={**tenant.headers(), "Origin": STRANGER})
        assert "access-control-allow-origin" not in theirs.headers
        assert "access-control-allow-credentials" not in theirs.headers


async def test_credentials_only_when_allowed(db: Database, tmp_path: Path) -> None:
    async with (
        running_app(db, tmp_path, cors_origins=[FRONT_END]) as app,
        client_for(app) as http,
    ):
        listed = await http.options("/api/v1/devices", headers=_preflight(FRONT_END, "GET"))
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == FRONT_END
        assert "access-control-allow-credentials" not in listed.headers


@pytest.mark.parametrize(
    "origin",
    ["*", "https://*.example.com", "https://app.example.com/", "app.example.com", "ftp://a.b"],
)
def test_only_exact_origins_are_accepted(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match="FLEETCORE_CORS_ORIGINS"):
        load_settings(data_dir=tmp_path, cors_origins=[origin])

"""What the API property tests (tests/api_properties/) share: schemas, the world, the call.

Schemathesis over the whole OpenAPI schema, as every role and as a device.

Every operation of /api/openapi.json is called over HTTP against a real uvicorn on a live
database with generated requests, valid and invalid, and every response is checked: never a
5xx, documented status codes and content types, bodies and headers matching the schema,
invalid requests refused, credentials not ignored, 405 with Allow for other methods. Path ids
are half the time those of real objects of the caller's organization, so requests get past
the lookup.

The tests are split over the modules of tests/api_properties/ (the admin's operations in two
halves by a stable hash, the other roles in two pairs), each module with a world of its own,
so that the test workers share them: in one module they were a sixth of the suite's time, all
on one worker.

CI runs few examples, seeded, so a failure is reproducible. Locally,
FLEETCORE_SCHEMATHESIS_EXAMPLES=100 raises them and runs the coverage phase for every role
and every operation; FLEETCORE_SCHEMATHESIS_BACKENDS=sqlite,postgresql adds PostgreSQL.
"""

from __future__ import annotations

import math
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection
from schemathesis.transport.requests import ManagedCookiesSession

from fleetcore.app import create_app
from fleetcore.auth import users
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import UserIn
from tests.conftest import make_settings
from tests.support.http_clients import local_client
from tests.support.lenience import lenient_negative_data_rejection
from tests.support.sweep import NON_ID_PARAMS, create_objects
from tests.support.tenants import PASSWORD, Tenant, make_tenant
from tests.support.threaded import ThreadedServer

DEFAULT_EXAMPLES = 5
EXAMPLES = int(os.environ.get("FLEETCORE_SCHEMATHESIS_EXAMPLES", str(DEFAULT_EXAMPLES)))
# Raised examples also turn on the coverage phase for every role and every operation.
THOROUGH = EXAMPLES > DEFAULT_EXAMPLES
BACKENDS = os.environ.get("FLEETCORE_SCHEMATHESIS_BACKENDS", "sqlite").split(",")
# Long-polls wait at most this long (seconds; the ThingsBoard routes take milliseconds).
LONG_POLL_S = 0.05
REQUEST_TIMEOUT_S = 30
# A rule's condition nests all/any of six kinds: its coverage phase is ~5,000 requests per
# operation (3 minutes in all); CI fuzzes those operations, THOROUGH covers them too.
COSTLY_COVERAGE = "^/api/v1/rules(/dry-run|/\\{rule_id\\})?$"

SPEC: dict[str, Any] = create_app(make_settings(Path(tempfile.gettempdir()))).openapi()


def _config(*, coverage: bool, mode: str = "all") -> schemathesis.Config:
    """Seeded and without an example database, so a CI run is reproducible."""
    operations = []
    if not THOROUGH:
        operations.append(
            {"include-path-regex": COSTLY_COVERAGE, "phases": {"coverage": {"enabled": False}}}
        )
    return schemathesis.Config.from_dict(
        {
            "seed": 14,
            # Credentials are the test's: a generated X-API-Key would be tried before the bearer.
            "generation": {
                "max-examples": EXAMPLES,
                "mode": mode,
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": coverage}},
            "checks": {
                "enabled": True,
                # 422 also answers a well-formed request that breaks a rule a schema cannot
                # state (an opaque cursor, a condition's grammar, a JSON Schema in a profile).
                # 408: a long-poll that saw nothing within its (short) timeout.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "401", "403", "404", "408", "409", "422", "429"]
                },
            },
            "operations": operations,
            "suppress-health-check": ["too_slow", "filter_too_much"],
        }
    )


def _is_device_route(ctx: Any) -> bool:
    operation = ctx.operation
    security = operation.definition.raw.get("security", [])
    named = {name for requirement in security for name in requirement}
    return "DeviceToken" in named or "{token}" in operation.path


def _is_public(ctx: Any) -> bool:
    return not ctx.operation.definition.raw.get("security") and not _is_device_route(ctx)


def _is_user_route(ctx: Any) -> bool:
    return not _is_public(ctx) and not _is_device_route(ctx)


def _only(base: Any, kind: Callable[[Any], bool]) -> Any:
    """The operations of `base` of that kind (by exclusion: Schemathesis ORs an include with
    the `operations` entries of the config, which select every operation)."""

    def other_kind(ctx: Any) -> bool:
        return not kind(ctx)

    return base.exclude(other_kind)


schema = schemathesis.openapi.from_dict(SPEC, config=_config(coverage=True))
# Input handling (the coverage phase: boundaries, wrong types, missing fields, other methods;
# invalid data) is the same for every role: tested as the admin. What a role may do shows
# with valid requests: the other roles send those.
fuzz_schema = schemathesis.openapi.from_dict(
    SPEC, config=_config(coverage=THOROUGH, mode="all" if THOROUGH else "positive")
)
other_roles_schema = _only(fuzz_schema, _is_user_route)
device_schema = _only(schema, _is_device_route)
public_schema = _only(schema, _is_public)


def half(index: int) -> Callable[[Any], bool]:
    """The user routes in half `index` (0 or 1) of them, by a stable hash of the operation."""

    def in_half(ctx: Any) -> bool:
        label = f"{ctx.operation.method.upper()} {ctx.operation.path}"
        return _is_user_route(ctx) and zlib.crc32(label.encode()) % 2 == index

    return in_half


admin_schemas = (_only(schema, half(0)), _only(schema, half(1)))


@dataclass
class World:
    """The server and what lives in it: an organization with objects, a superuser."""

    server: ThreadedServer
    tenant: Tenant
    superuser_email: str
    ids: dict[str, str]
    # The generated requests' connections, kept alive between them (a session and a TCP
    # connection per request otherwise). Response cookies are dropped after each request
    # (a sign-in's cookie would otherwise authenticate later requests besides their
    # headers); no proxies from the environment.
    session: requests.Session = field(default_factory=lambda: _session())

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:port."""
        return self.server.base_url

    def login(self, email: str) -> str:
        """A fresh access token (a test may end its own session: logout, password change)."""
        response = requests.post(
            f"{self.base_url}/api/v1/auth/login",
            json={"email": email, "password": PASSWORD},
            timeout=REQUEST_TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def email(self, role: str) -> str:
        """The signed-in user of `role` (superuser: the platform's)."""
        return self.superuser_email if role == "superuser" else self.tenant.emails[Role(role)]

    def new_objects(self) -> dict[str, str]:
        """A set of objects of its own, for an operation that may delete what it is given."""
        return self.server.run(self._objects())

    async def _objects(self) -> dict[str, str]:
        assert self.server.app is not None
        async with local_client(base_url=self.base_url) as client:
            return await create_objects(self.server.app, client, self.tenant)


async def populate(server: ThreadedServer) -> tuple[Tenant, str, dict[str, str]]:
    assert server.database is not None
    assert server.app is not None
    async with local_client(base_url=server.base_url) as client:
        tenant = await make_tenant(client, server.database)
        ids = await create_objects(server.app, client, tenant)
        email = f"root@{tenant.slug}.platform.example.com"
        async with server.database.session(write=True) as session:
            await users.create_user(
                session, None, data=UserIn(email=email, password=PASSWORD), is_superuser=True
            )
        # A user of its own for PATCH /users/{user_id}: deactivating a signed-in role would
        # end the other tests' sessions.
        async with server.database.session(write=True) as session:
            target = await users.create_user(
                session,
                None,
                data=UserIn(
                    email=f"target@{tenant.slug}.example.com",
                    password=PASSWORD,
                    organization_id=tenant.org_id,
                ),
            )
        ids["user_id"] = str(target.id)
    return tenant, email, ids


def _bound_long_polls(case: schemathesis.Case) -> None:
    """A long-poll without `timeout` waits 30 s, and a generated one up to a minute; cap it."""
    declared = {p.get("name") for p in case.operation.definition.raw.get("parameters", [])}
    if "timeout" not in declared:
        return
    milliseconds = "{token}" in case.operation.path  # the ThingsBoard routes
    cap = int(LONG_POLL_S * 1000) if milliseconds else LONG_POLL_S
    if case.query is None:
        case.query = {}
    if not isinstance(case.query, dict):
        return
    try:
        number = float(case.query.get("timeout", math.inf))
    except (TypeError, ValueError):
        return  # not a number: refused before any wait
    if not number <= cap:  # also NaN and infinity
        case.query["timeout"] = cap


def use_known_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Half the cases (chosen by their own generated values, so shrinking sees the same
    choice) get the ids of real objects instead of generated ones."""
    if not isinstance(case.path_parameters, dict) or not case.path_parameters:
        return
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
        return  # the invalid value is the point of the case
    if zlib.crc32(repr(sorted(case.path_parameters.items())).encode()) % 2:
        return
    for name in list(case.path_parameters):
        if name in ids:
            case.path_parameters[name] = ids[name]
        elif name in NON_ID_PARAMS:
            case.path_parameters[name] = NON_ID_PARAMS[name]


def _session() -> requests.Session:
    session = ManagedCookiesSession()
    session.trust_env = False
    # Schemathesis sends without the session's default headers when it makes the session
    # itself; with ours it would add them to every request.
    session.headers.clear()
    return session


def call(case: schemathesis.Case, world: World, headers: dict[str, str]) -> None:
    _bound_long_polls(case)
    transport = {
        "base_url": world.base_url,
        "headers": headers,
        "timeout": REQUEST_TIMEOUT_S,
        "session": world.session,
    }
    response = case.call(**transport)
    if "x-request-id" not in response.headers:
        # Refused by uvicorn's HTTP parser before the app (a request line of hundreds of KiB
        # of percent-encoded text): plain text, no envelope; it must still be the client's.
        assert 400 <= response.status_code < 500, response.text
        return
    case.validate_response(
        response,
        headers=headers,
        transport_kwargs=transport,
        excluded_checks=[negative_data_rejection],
        additional_checks=[lenient_negative_data_rejection],
    )


# One sign-in per test, not per example: the fixtures are meant to outlive examples.
FIXTURES_PER_TEST = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- the tests, made once here and placed by the modules of tests/api_properties/ --------
def admin_test(operations: Any) -> Callable[..., None]:
    """Every operation of `operations` as the admin: valid requests and the coverage phase
    (boundaries, wrong types, missing fields, other methods)."""

    @FIXTURES_PER_TEST
    @operations.parametrize()
    def test_user_routes_as_admin(
        case: schemathesis.Case, world: World, admin: dict[str, str], objects: dict[str, str]
    ) -> None:
        use_known_ids(case, objects)
        call(case, world, admin)

    return test_user_routes_as_admin


def roles_test(roles: list[str]) -> Callable[..., None]:
    """Every user route as each of `roles`: valid requests (what a role may do)."""

    @pytest.mark.parametrize("role", roles)
    @FIXTURES_PER_TEST
    @other_roles_schema.parametrize()
    def test_user_routes_as_other_roles(
        case: schemathesis.Case,
        role: str,
        world: World,
        bearer: dict[str, str],
        objects: dict[str, str],
    ) -> None:
        use_known_ids(case, objects)
        call(case, world, bearer)

    return test_user_routes_as_other_roles
